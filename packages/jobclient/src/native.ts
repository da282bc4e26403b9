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

/** The loader of node-addon-api packages: build/Release first, then prebuilds/<platform>-<arch>/. */
type GypBuild = (dir: string) => unknown

/**
 * Load the compiled addon once per process: build/Release/jobclient.node (scripts/build.sh, or
 * the build an npm install ran), else the prebuild the npm tarball ships for this platform.
 * Throws an Error with code ERR_JOBCLIENT_NO_ADDON that says how to build it when neither loads.
 */
export function loadNative(): Native {
  if (!cached) {
    // dist/native.js -> the package directory
    const pkgDir = path.join(__dirname, '..')
    try {
      cached = (require('node-gyp-build') as GypBuild)(pkgDir) as Native
    } catch (e) {
      throw noAddon(pkgDir, e as Error)
    }
  }
  return cached
}

function noAddon(pkgDir: string, cause: Error): Error {
  const why = String(cause?.message ?? cause).split('\n')[0]
  const err = new Error(
    `jobclient: cannot load its native addon (${why}). No prebuilt addon in ${pkgDir}/prebuilds ` +
      `fits this system and none was built. Build it with "npm rebuild jobclient" in your project ` +
      `(needs python3, make, a C++17 compiler and the Node.js headers; when they are installed in ` +
      `/usr/include/node: "npm_config_nodedir=/usr npm rebuild jobclient"), or with ` +
      `"bash scripts/build.sh" in a steved checkout`,
    { cause },
  ) as Error & { code: string }
  err.code = 'ERR_JOBCLIENT_NO_ADDON'
  return err
}
