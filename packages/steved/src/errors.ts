// Domain errors of the daemon: a closed set of codes; the CLI maps them to exit codes.
import { errnoName } from 'jobclient'

export type StevedErrorCode =
  | 'ERR_STEVED_USAGE' // bad command line or configuration (exit 2)
  | 'ERR_STEVED_NO_DEVICE' // /dev/fuse or /dev/cuse missing (exit 1)
  | 'ERR_STEVED_PERMISSION' // not allowed to mount / register / drop privileges (exit 1)
  | 'ERR_STEVED_BUSY' // the path or device name is already served (exit 1)
  | 'ERR_STEVED_MOUNT' // the kernel refused the mount or registration (exit 1)

export class StevedError extends Error {
  readonly code: StevedErrorCode
  /** What the user can do about it, printed after the message. */
  readonly hint?: string
  constructor(code: StevedErrorCode, message: string, hint?: string) {
    super(message)
    this.name = 'StevedError'
    this.code = code
    this.hint = hint
  }
  get exitCode(): number {
    return this.code === 'ERR_STEVED_USAGE' ? 2 : 1
  }
}

/** A Node-shaped system error from a -errno result. */
export function systemError(negErrno: number, syscall: string, path?: string): NodeJS.ErrnoException {
  const code = errnoName(negErrno)
  const e: NodeJS.ErrnoException = new Error(`${syscall} ${code}${path ? ` ${path}` : ''}`)
  e.code = code
  e.errno = negErrno
  e.syscall = syscall
  if (path) e.path = path
  return e
}
