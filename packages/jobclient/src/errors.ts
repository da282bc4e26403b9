// Errors of the jobclient package. Two kinds, both with a stable `code` (the API; messages are
// for humans and may change):
//   - system errors from a syscall, shaped like Node's own fs errors (`code` 'EAGAIN', negative
//     `errno`, `syscall`, `path`), built from the -errno the native layer returns;
//   - JobserverError, for everything that is about the protocol rather than a syscall, with a
//     closed set of ERR_JOBSERVER_* codes.
import * as fs from 'node:fs'
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

/**
 * An error with a stable `code` from a closed set (the API; the message is for humans). The
 * project's domain errors (JobserverError here, the emerge shim's ShimError) are this; `name`
 * is the subclass's.
 */
export class CodedError<C extends string> extends Error {
  readonly code: C
  constructor(code: C, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}

/** A jobserver protocol or usage problem; `code` says which. */
export class JobserverError extends CodedError<JobserverErrorCode> {}

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
  // A dead mount can answer any call (a read, a poll), not only the open: same words everywhere.
  if (path !== undefined && problemOf(code) === 'dead-mount') e.message = describeProblem('dead-mount', path)
  return e
}

/** The name of an errno value ('EPERM'), positive or negative; the number when it has none. */
export function errnoName(errno: number): string {
  try {
    return util.getSystemErrorName(errno < 0 ? errno : -errno)
  } catch {
    return String(Math.abs(errno))
  }
}

/**
 * One line for any error, the way every tool of the project prints it: "message [CODE]", the
 * message on one line, `fallback` when the error has no string code.
 */
export function describeError(e: unknown, fallback = 'ERR_JOBSERVER_UNKNOWN'): string {
  const { code, message } = errorParts(e, fallback)
  return `${message} [${code}]`
}

/** An error's code (or `fallback`) and its message on one line. */
export function errorParts(e: unknown, fallback = 'ERR_JOBSERVER_UNKNOWN'): { code: string; message: string } {
  const err = e as { code?: unknown; message?: unknown }
  const code = typeof err?.code === 'string' ? err.code : fallback
  const message = typeof err?.message === 'string' ? err.message : String(e)
  return { code, message: message.replace(/\s*\n\s*/g, ' ') }
}

/** The error an aborted call rejects with, as Node's own APIs do (`code` 'ABORT_ERR'). */
export function abortError(signal: AbortSignal): Error {
  const e = new Error('The operation was aborted', { cause: signal.reason }) as Error & { code: string }
  e.name = 'AbortError'
  e.code = 'ABORT_ERR'
  return e
}

// The words for the four ways a jobserver path can fail, in one place for every Node tool of the
// project (jobclient, stevectl, the emerge shim): a user meets the same sentence whichever tool
// tripped over the condition. The pytest plugin has the same words in Python
// (pytest_steved_jobserver.plugin.problem_words); test/problem-words.test.ts holds both to one table.

/** A condition of a jobserver path that a user can act on. */
export type JobserverProblem = 'dead-mount' | 'missing' | 'not-a-jobserver' | 'permission'

/** Which problem an error code means, or null for any other code. */
export function problemOf(code: string | undefined): JobserverProblem | null {
  switch (code) {
    case 'ENOTCONN':
    case 'ECONNABORTED':
      return 'dead-mount'
    case 'ENOENT':
      return 'missing'
    case 'ERR_JOBSERVER_NOT_FIFO':
      return 'not-a-jobserver'
    case 'EACCES':
    case 'EPERM':
      return 'permission'
    default:
      return null
  }
}

/**
 * What is wrong and what to do, for `path`. `group` matters for 'permission' only: the group the
 * file is served to (from its mode and owner, see accessGroup), or null when only root may use it.
 */
export function problemWords(problem: JobserverProblem, path: string, group: string | null = null): { what: string; todo: string } {
  switch (problem) {
    case 'dead-mount':
      return { what: `${path} is a dead steved mount (steved stopped or crashed)`, todo: 'start steved again; it clears the dead mount' }
    case 'missing':
      return { what: `${path} does not exist`, todo: 'start steved, or use the path it serves' }
    case 'not-a-jobserver':
      return {
        what: `${path} is not a jobserver (not a FIFO, a character device or a file steved serves)`,
        todo: 'start steved, or use the path it serves',
      }
    case 'permission':
      return group !== null
        ? { what: `permission denied on ${path}`, todo: `join group ${group}, which steved serves it to (as root: usermod -aG ${group} USER), then log in again` }
        : {
            what: `permission denied on ${path}`,
            todo: 'steved serves it to root only: as root, create group jobserver (groupadd jobserver), add yourself (usermod -aG jobserver USER) and restart steved, or start it with --mode 0666',
          }
  }
}

/** The one line for a problem: "WHAT; TODO". */
export function describeProblem(problem: JobserverProblem, path: string, group: string | null = null): string {
  const { what, todo } = problemWords(problem, path, group)
  return `${what}; ${todo}`
}

/**
 * The group a jobserver file is served to: its owning group when the mode gives that group read
 * and write, by name from /etc/group (else the number). Null when only the owner may use it, when
 * the group is root's, or when the file cannot be examined.
 */
export function accessGroup(path: string): string | null {
  let st: fs.Stats
  try {
    st = fs.statSync(path)
  } catch {
    return null
  }
  if ((st.mode & 0o060) !== 0o060 || st.gid === 0) return null
  try {
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const f = line.split(':')
      if (f.length >= 3 && Number(f[2]) === st.gid && f[0] !== '') return f[0]
    }
  } catch {
    // No /etc/group (a minimal container): the number still names the group.
  }
  return String(st.gid)
}

/**
 * Rewrite the message of an error about `path` in the shared words when its code is one of the
 * problems (the code, errno and syscall stay: they are the API). `syscall` limits which problems
 * apply: a dead mount can show up on any call, the others only when opening or examining the path
 * (ENOENT from an ioctl means something else).
 */
export function withProblemWords<E>(e: E, path: string): E {
  const err = e as { code?: string; syscall?: string; message?: string }
  if (err === null || typeof err !== 'object') return e
  const problem = problemOf(err.code)
  if (problem === null) return e
  const opening = err.syscall === undefined || err.syscall === 'open' || err.syscall === 'stat' || err.syscall === 'statfs'
  if (problem !== 'dead-mount' && !opening) return e
  err.message = describeProblem(problem, path, problem === 'permission' ? accessGroup(path) : null)
  return e
}
