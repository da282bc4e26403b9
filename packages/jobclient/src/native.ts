// The shape of the native addon (native/jobclient.cc), declared once. Every function does one
// syscall and returns >= 0 or -errno; none throws for a system error. Tests and tools may pass
// their own object of this shape to JobClient instead of the addon.

import * as path from 'node:path'

/** A readiness watch on one fd (a `uv_poll_t`); it does not own the fd. */
export interface NativePoller {
  /** Start (or keep) watching for readability: 0 or -errno. Idempotent. */
  start(): number
  /** Stop watching: 0 or -errno. Idempotent. */
  stop(): number
  /** Free the handle; the fd may be closed right after. Idempotent. */
  close(): void
}

/** `status` is 0 or -errno (e.g. -EBADF); `events` is a mask of `UV_READABLE`... */
export type PollCallback = (status: number, events: number) => void

/** The native addon: the syscalls Node does not offer without a worker thread. */
export interface Native {
  /** read(2) into `buf`: bytes read (0 means end of file) or -errno. */
  read(fd: number, buf: Buffer): number
  /** write(2) from `buf`: bytes written or -errno. */
  write(fd: number, buf: Buffer): number
  /** ioctl(2): a Buffer is passed as a pointer, a number as the integer argument. */
  ioctl(fd: number, request: number, arg?: Buffer | number): number
  /** A readability watch on `fd`, reported on every loop turn while started. */
  Poller: new (fd: number, callback: PollCallback) => NativePoller
}

/** libuv's event bits as passed to a {@link PollCallback}. */
export const UV_READABLE = 1

/** `ioctl` request: bytes ready to read, into a 4-byte int. */
export const FIONREAD = 0x541b

let cached: Native | undefined

/** Load the compiled addon (built by scripts/build.sh) once per process. */
export function loadNative(): Native {
  if (!cached) {
    // dist/native.js -> ../build/Release/jobclient.node
    cached = require(path.join(__dirname, '..', 'build', 'Release', 'jobclient.node')) as Native
  }
  return cached
}
