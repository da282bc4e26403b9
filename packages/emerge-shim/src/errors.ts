// Errors of the emerge shim: one class with a closed set of codes (tests assert codes, never
// wording). System errors from syscalls stay Node's own (code 'ECONNREFUSED', ...).
import { CodedError, describeError as describeAnyError } from 'jobclient'

/** The closed set of domain error codes. */
export type ShimErrorCode =
  /** A malformed or unknown message on the holder socket. */
  | 'ERR_SHIM_PROTOCOL'
  /** The holder could not be started, or died before it was ready. */
  | 'ERR_SHIM_HOLDER_START'
  /** The holder closed the connection before it answered. */
  | 'ERR_SHIM_HOLDER_GONE'
  /** The holder is giving its tokens back (the job ended) and takes no new phases. */
  | 'ERR_SHIM_HOLDER_ENDING'
  /** The holder would not, or could not, join a process to the job's steved group for a phase. */
  | 'ERR_SHIM_JOIN_REFUSED'
  /** A package.env setting (JOBSERVER_TOKENS, JOBSERVER_MAX_JOBS) that is not a whole number >= 1. */
  | 'ERR_SHIM_BAD_SETTING'
  /** The environment lacks a variable Portage always sets (PORTAGE_BUILDDIR, CATEGORY, PF, T). */
  | 'ERR_SHIM_NO_PORTAGE_ENV'
  /** A bad command-line argument. */
  | 'ERR_SHIM_USAGE'

export class ShimError extends CodedError<ShimErrorCode> {}

/** One line for an error: "message [CODE]" (jobclient's describeError). */
export function describeError(e: unknown): string {
  return describeAnyError(e, 'ERR_UNKNOWN')
}
