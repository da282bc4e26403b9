// The shape of the native addon (native/*.cc), declared once. Plain functions return
// >= 0 or -errno; they never throw for system errors.

import * as path from 'node:path'

/** Request kinds passed to the session callback (native/session.cc `Kind`). */
export const enum RequestKind {
  Open = 1,
  Read = 2,
  Write = 3,
  Poll = 4,
  Release = 5,
  Interrupt = 6,
  Ioctl = 7,
  Ready = 8,
  Gone = 9,
}

/**
 * Called for every request the native layer cannot answer alone.
 *   Open:      a = open flags                 (already answered; fh assigned)
 *   Read:      a = current file flags, b = requested size
 *   Write:     a = file flags, b = byte count
 *   Poll:      a = 1 if the caller waits for a notify, b = requested events
 *   Release:   fh only                        (already answered; pid is not known)
 *   Interrupt: id of the request the caller gave up on
 *   Ioctl:     a = command, b = size of the output buffer, data = input bytes
 *   Ready:     the file or device is usable
 *   Gone:      the kernel side went away (a = receive result)
 */
export type RequestCallback = (
  kind: RequestKind,
  id: number,
  fh: number,
  tid: number,
  uid: number,
  gid: number,
  a: number,
  b: number,
  data?: Buffer,
) => void

export interface NativeSession {
  /** Mount a FUSE file system whose root is a regular file at `path`. */
  mountFile(path: string, options: string, mode: number, uid: number, gid: number): number
  /** Register a CUSE device /dev/`devName` through the given /dev/cuse node. */
  registerDevice(devName: string, cuseDevice: string): number
  replyData(id: number, data: Buffer): number
  replyError(id: number, errno: number): number
  replyWrite(id: number, count: number): number
  replyPoll(id: number, revents: number): number
  replyIoctl(id: number, result: number, data?: Buffer): number
  notifyPoll(fh: number): number
  /** Stop: answer parked requests, unmount (through `unmountPath` if given and that works). */
  close(unmountPath?: string): void
}

export interface NativeFdPoll {
  close(): void
}

export interface Addon {
  Session: new (cb: RequestCallback) => NativeSession
  /** One-shot readability watch; owns and closes `fd`. */
  FdPoll: new (fd: number, onReadable: (status: number) => void) => NativeFdPoll
  pidfdOpen(pid: number): number
  umount(path: string, flags: number): number
}

export const MNT_DETACH = 2

let cached: Addon | undefined

export function loadAddon(): Addon {
  if (!cached) {
    // dist/native.js -> ../build/Release/steved.node
    cached = require(path.join(__dirname, '..', 'build', 'Release', 'steved.node')) as Addon
  }
  return cached
}
