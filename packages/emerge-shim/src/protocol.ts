// The holder's socket protocol: one JSON object per line, one request per connection.
//
// The holder listens on ${PORTAGE_BUILDDIR}/.steved-jobserver.sock (a Unix socket, mode 0666
// inside the build directory, which Portage already restricts). Each phase of the job connects
// once:
//   {"v":1,"op":"attach","pid":P,"start":S,"phase":"compile"}
//       -> {"type":"wait","text":...}*            while the holder waits for its tokens
//       -> {"type":"holding",...}                 the job holds its tokens; the phase goes on
//     P is the phase's ebuild.sh ($$): the holder watches it, its descendants and its parent
//     ("emerge"), and holds the tokens at least until all of the build is gone.
//   {"v":1,"op":"end","reason":"success"|"failed","pid":P}
//       -> {"type":"ending","waitingFor":N}       the tokens go back once the N processes of
//                                                 the build (P's among them) are gone
//   {"v":1,"op":"join","pid":P,"start":S,"phase":"compile"}
//       -> {"type":"joined","group":G,"limit":L}  the holder put P into the job's steved group
//     For a phase whose own join steved refused with EPERM: under FEATURES=userpriv the group
//     was made by root (setup and the holder it started), and the phases that run as the
//     portage user may not join it. The holder does it for them, but only for a process started
//     with this job's PORTAGE_BUILDDIR in its environment (so nobody who can reach the socket
//     can make a root holder cap someone else's processes); ERR_SHIM_JOIN_REFUSED otherwise.
//   {"v":1,"op":"status"} -> {"type":"status",...}   for tests and for people
// Any request may also get {"type":"error","code":...,"message":...}. A holder that is already
// giving its tokens back answers attach with an error ERR_SHIM_HOLDER_ENDING.
import { ShimError } from './errors'

export const PROTOCOL_VERSION = 1
export const SOCKET_NAME = '.steved-jobserver.sock'

export type Request =
  | { v: 1; op: 'attach'; pid: number; start: number; phase: string }
  | { v: 1; op: 'end'; reason: 'success' | 'failed'; pid: number }
  | { v: 1; op: 'join'; pid: number; start: number; phase: string }
  | { v: 1; op: 'status' }

/** What the holder says about itself (the `holding` and `status` replies). */
export interface HolderState {
  holderPid: number
  /** CATEGORY/PF */
  pkg: string
  /** Tokens the holder holds now. */
  tokens: number
  /** Tokens it is meant to hold. */
  wanted: number
  /** Seconds since it got them (null: not yet). */
  heldForSeconds: number | null
  /** The phase that started the holder. */
  firstPhase: string
  /** Phases attached so far, in order. */
  phases: string[]
  /** The jobserver path. */
  jobserver: string
  /** steved's group of this build, when capped. */
  group: { name: string; limit: number } | null
  /** The process that runs the phases, as found from the first phase. */
  supervisor: { pid: number; comm: string } | null
  /** Why the holder is ending, or null while the job runs. */
  ending: string | null
}

export type Reply =
  | { type: 'wait'; text: string }
  | ({ type: 'holding' } & HolderState)
  | { type: 'ending'; waitingFor: number }
  | { type: 'joined'; group: string; limit: number }
  | ({ type: 'status' } & HolderState)
  | { type: 'error'; code: string; message: string }

export function encode(m: Request | Reply): string {
  return `${JSON.stringify(m)}\n`
}

const isInt = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0

/** Parse and check one request line. Throws ERR_SHIM_PROTOCOL. */
export function parseRequest(line: string): Request {
  let m: Record<string, unknown>
  try {
    m = JSON.parse(line) as Record<string, unknown>
  } catch {
    throw new ShimError('ERR_SHIM_PROTOCOL', 'a request line is not JSON')
  }
  if (m === null || typeof m !== 'object' || m.v !== PROTOCOL_VERSION) {
    throw new ShimError('ERR_SHIM_PROTOCOL', `protocol version ${String(m?.v)} is not ${PROTOCOL_VERSION}`)
  }
  switch (m.op) {
    case 'attach':
      if (isInt(m.pid) && isInt(m.start) && typeof m.phase === 'string') return { v: 1, op: 'attach', pid: m.pid, start: m.start, phase: m.phase }
      break
    case 'end':
      if ((m.reason === 'success' || m.reason === 'failed') && isInt(m.pid)) return { v: 1, op: 'end', reason: m.reason, pid: m.pid }
      break
    case 'join':
      if (isInt(m.pid) && isInt(m.start) && typeof m.phase === 'string') return { v: 1, op: 'join', pid: m.pid, start: m.start, phase: m.phase }
      break
    case 'status':
      return { v: 1, op: 'status' }
  }
  throw new ShimError('ERR_SHIM_PROTOCOL', `bad request: ${line.slice(0, 200)}`)
}

/** Parse one reply line. Throws ERR_SHIM_PROTOCOL. */
export function parseReply(line: string): Reply {
  let m: Reply
  try {
    m = JSON.parse(line) as Reply
  } catch {
    throw new ShimError('ERR_SHIM_PROTOCOL', 'a reply line is not JSON')
  }
  if (!m || typeof m !== 'object' || !['wait', 'holding', 'ending', 'joined', 'status', 'error'].includes((m as { type?: string }).type ?? '')) {
    throw new ShimError('ERR_SHIM_PROTOCOL', `bad reply: ${line.slice(0, 200)}`)
  }
  return m
}
