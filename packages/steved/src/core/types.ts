// The vocabulary of the token policy: what the transports tell it (Input) and what it asks
// them to do (Effect). Nothing here knows about FUSE, files or Node: the io layer translates.

/** Settings that shape admission. All of them can change at runtime (`configure`). */
export interface PoolConfig {
  /** Tokens in the pool (`-j`). */
  jobs: number
  /** While fewer than this many tokens are out, the load limit is not applied (`-m`). */
  minJobs: number
  /** Grant only while the 1-minute load average is at most this (`-l`); null: no limit. */
  loadAverage: number | null
  /** How often load and memory are re-sampled while someone waits (`-r`), in ms. */
  loadRecheckMs: number
  /** Grant only while MemAvailable is at least this many MiB (`-a`); null: no floor. */
  minMemoryAvailMiB: number | null
  /** At most this many tokens (held + reserved) per process (`-p`); null: no cap. */
  perProcessLimit: number | null
  /** How long a token stays reserved for a poller that was told POLLIN, in ms. */
  reservationExpiryMs: number
  /**
   * Grant only while CPU, memory or IO pressure (the `some avg10` percentage of pressure stall
   * information) is at most this; null or 0: no limit. Like the load limit, these do not apply
   * while fewer than `minJobs` tokens are out.
   */
  maxCpuPressure: number | null
  maxMemoryPressure: number | null
  maxIoPressure: number | null
}

/** The resources pressure stall information covers. */
export type PressureResource = 'cpu' | 'memory' | 'io'

/** `some avg10` per resource, in percent; null where the kernel did not say (no PSI, no file). */
export type PressureSample = Record<PressureResource, number | null>

export const DEFAULT_RESERVATION_EXPIRY_MS = 1000

/**
 * The errors the policy answers with. The io layer maps them to errno values. EPERM, EINVAL,
 * ESRCH and ENOENT answer control requests only.
 */
export type ErrnoName = 'EAGAIN' | 'EINTR' | 'ENOSPC' | 'EPERM' | 'EINVAL' | 'ESRCH' | 'ENOENT'

/**
 * Who sent a control request, as the io layer found out before handing the request in: the
 * pool decides who may do what (docs/control.md) but never looks anyone up itself.
 */
export interface Caller {
  pid: number
  uid: number
  /** Root, or a member of the admin group: may change settings and every group. */
  admin: boolean
}

/** What a GET can read: a setting of the pool, or one of its counts. */
export type Reading = keyof PoolConfig | 'free' | 'held' | 'reserved' | 'waiters'

/** A control request (the ioctls of docs/control.md, decoded and checked for form by the control layer). */
export type ControlRequest =
  | { op: 'get'; what: Reading }
  /** Change settings (admins only). `setting` and `value` are the caller's words, for the log line. */
  | { op: 'set'; patch: Partial<PoolConfig>; setting: string; value: number | null }
  /**
   * Put the process tree under `root` into the group `name` (created if new) with at most
   * `limit` tokens held + reserved by all its members together (null: no cap). `rootOwner` is
   * the uid `root` runs as, or null when there is no such process. The group is the caller's.
   */
  | { op: 'join'; name: string; root: number; limit: number | null; rootOwner: number | null }
  /** Dissolve a group: its members become ordinary processes again. */
  | { op: 'remove'; name: string }

/**
 * Events from a transport. `pid` is always a process id (TGID), never a thread id; 0 means
 * "not visible from the server's pid namespace" and cannot be watched. `now` is in ms on a
 * monotonic clock supplied by the caller.
 */
export type Input =
  | { kind: 'open'; fh: number; pid: number; ancestries?: Ancestries; now: number }
  | { kind: 'read'; req: number; fh: number; pid: number; nonblock: boolean; ancestries?: Ancestries; now: number }
  | { kind: 'poll'; req: number; fh: number; pid: number; wantsNotify: boolean; ancestries?: Ancestries; now: number }
  | { kind: 'write'; req: number; fh: number; pid: number; count: number; ancestries?: Ancestries; now: number }
  | { kind: 'release'; fh: number; now: number }
  | { kind: 'interrupt'; req: number; now: number }
  | { kind: 'exit'; pid: number; now: number }
  | { kind: 'tick'; now: number }
  /** A machine sample; `pressure` only when a pressure limit is set (absent: none known). */
  | { kind: 'sample'; load1: number; memAvailMiB: number; pressure?: PressureSample; now: number }
  /** steved's own change of settings (its configuration file on SIGHUP): trusted, no reply. */
  | { kind: 'configure'; patch: Partial<PoolConfig>; now: number }
  /**
   * A control request from a client, answered with `reply-control` or `reply-error`. For a
   * join, `ancestries` covers the root and every process the pool knows (`Pool.ancestryWanted`):
   * processes already known are re-examined, later ones join when first seen.
   */
  | { kind: 'control'; req: number; caller: Caller; request: ControlRequest; ancestries?: Ancestries; now: number }

export type Effect =
  /** Answer a read with one token byte. */
  | { kind: 'reply-token'; req: number; byte: number }
  | { kind: 'reply-error'; req: number; errno: ErrnoName }
  /** Answer a write: `count` bytes taken back. */
  | { kind: 'reply-write'; req: number; count: number }
  /** Answer a control request: done, with the value read for a `get`. */
  | { kind: 'reply-control'; req: number; value?: number | null }
  /** Answer a poll: POLLOUT always, POLLIN when `readable`. */
  | { kind: 'reply-poll'; req: number; readable: boolean }
  /** Wake the pollers of this open file: it became readable for them. */
  | { kind: 'notify-poll'; fh: number }
  /** Start watching this process: deliver an `exit` input when it is gone. */
  | { kind: 'watch'; pid: number }
  /** Deliver a `tick` at this time (replaces any earlier request); null: no tick needed. */
  | { kind: 'timer'; at: number | null }
  /** A line for the operator (shown under -v): what the pool did that nobody asked for. */
  | { kind: 'log'; level: 'info'; text: string }

/** Why a waiter is still waiting. */
export type WaitReason =
  | 'no-tokens'
  | 'load'
  | 'memory'
  | 'pressure:cpu'
  | 'pressure:memory'
  | 'pressure:io'
  | 'per-process-limit'
  | 'group-limit'

export interface Counters {
  /** Tokens handed to readers. */
  granted: number
  /** Tokens written back by their holders. */
  returned: number
  /** Tokens taken back from processes that exited while holding them. */
  reclaimed: number
  /** Writes refused with ENOSPC (more returned than held). */
  enospc: number
  /** Parked reads answered with EINTR. */
  interrupts: number
  /** Reads answered with EAGAIN. */
  eagain: number
  /** Reservations that ran out before their poller read. */
  reservationsExpired: number
  /** Most processes holding at least one token at the same time. */
  peakHolders: number
  /** Time spent with no free token, in ms (up to the last event). */
  msAtZeroFree: number
}

export interface HolderInfo {
  pid: number
  tokens: number
  /** Age in ms of each token the process holds, oldest first. */
  heldForMs: number[]
}

export interface GroupInfo {
  name: string
  limit: number | null
  /** uid that owns the group: it (or an admin) may change its limit, join trees to it, dissolve it. */
  owner: number
  /** Registered tree roots still alive. */
  roots: number[]
  /** Known processes in the group. */
  members: number[]
  /** Tokens held + reserved by the members. */
  tokens: number
}

export interface WaiterInfo {
  pid: number
  fh: number
  how: 'read' | 'poll'
  waitingForMs: number
  reason: WaitReason
}

export interface ReservationInfo {
  pid: number
  fh: number
  ageMs: number
  expiresInMs: number
}

export interface PoolSnapshot {
  config: PoolConfig
  jobs: number
  /** May be negative right after `jobs` was lowered below what is out. */
  free: number
  held: number
  reserved: number
  lastSample: { load1: number; memAvailMiB: number; pressure: PressureSample | null; ageMs: number } | null
  holders: HolderInfo[]
  waiters: WaiterInfo[]
  reservations: ReservationInfo[]
  groups: GroupInfo[]
  counters: Counters
}

/**
 * Ancestry of processes by pid: each list is the process itself first, then its parent and so
 * on (as far as it is known). Group membership needs it, and the core never reads /proc: the
 * io layer asks `Pool.ancestryWanted(input)` which pids an input needs and attaches theirs.
 * A pid missing from it counts as a process with no known parent.
 */
export type Ancestries = Readonly<Record<number, readonly number[]>>
