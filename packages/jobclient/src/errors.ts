// Errors of the jobclient package. Two kinds, both with a stable `code` (the API; messages are
// for humans and may change):
//   - system errors from a syscall, shaped like Node's own fs errors (`code` 'EAGAIN', negative
//     `errno`, `syscall`, `path`), built from the -errno the native layer returns;
//   - JobserverError, for everything that is about the protocol rather than a syscall, with a
//     closed set of ERR_JOBSERVER_* codes.
import * as util from 'node:util'

/** The closed set of domain error codes. */
export type JobserverErrorCode =
  /** The environment names no jobserver (and no default path exists, where one is tried). */
  | 'ERR_JOBSERVER_NO_ENV'
  /** A `--jobserver-auth`/`--jobserver-fds` value that is neither `fifo:PATH` nor `R,W`. */
  | 'ERR_JOBSERVER_BAD_AUTH'
  /** `R,W` names fds that are closed or are not pipes (make 4.3 leaves stale numbers behind). */
  | 'ERR_JOBSERVER_BAD_FD'
  /** The `fifo:` path is neither a FIFO, a character device nor a file served by FUSE. */
  | 'ERR_JOBSERVER_NOT_FIFO'
  /** A read returned 0 bytes: the jobserver is gone or broken (a server must never do this). */
  | 'ERR_JOBSERVER_EOF'
  /** The client was closed (explicitly, or at process exit) while the call was pending. */
  | 'ERR_JOBSERVER_CLOSED'
  /** A non-blocking attempt found no token. */
  | 'ERR_JOBSERVER_WOULD_BLOCK'
  /** A token id that this agent did not hand out, or already took back. */
  | 'ERR_JOBSERVER_UNKNOWN_TOKEN'
  /** A malformed agent request line. */
  | 'ERR_JOBSERVER_PROTOCOL'
  /** A bad argument to a library function or the CLI. */
  | 'ERR_JOBSERVER_INVALID_ARG'

/** A jobserver protocol or usage problem; `code` says which. */
export class JobserverError extends Error {
  readonly code: JobserverErrorCode
  constructor(code: JobserverErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'JobserverError'
    this.code = code
  }
}

/** The shape of the errors Node's fs module throws. */
export interface SystemError extends Error {
  code: string
  errno: number
  syscall: string
  path?: string
}

/**
 * A Node-shaped error for a failed syscall: message `EAGAIN: resource temporarily unavailable,
 * read '/dev/steve'`, `code` from util.getSystemErrorName, `errno` negative as in Node.
 */
export function systemError(negErrno: number, syscall: string, path?: string): SystemError {
  const errno = negErrno < 0 ? negErrno : -negErrno
  let code: string
  let description: string
  try {
    code = util.getSystemErrorName(errno)
    description = util.getSystemErrorMap().get(errno)?.[1] ?? 'unknown error'
  } catch {
    code = `Unknown system error ${errno}`
    description = 'unknown error'
  }
  const e = new Error(`${code}: ${description}, ${syscall}${path !== undefined ? ` '${path}'` : ''}`) as SystemError
  e.code = code
  e.errno = errno
  e.syscall = syscall
  if (path !== undefined) e.path = path
  return e
}

/** The error an aborted call rejects with, as Node's own APIs do (`code` 'ABORT_ERR'). */
export function abortError(signal: AbortSignal): Error {
  const e = new Error('The operation was aborted', { cause: signal.reason }) as Error & { code: string }
  e.name = 'AbortError'
  e.code = 'ABORT_ERR'
  return e
}
