// The token pool: per-process accounting, one FIFO queue for parked readers and pollers,
// reservations for pollers, and admission by load, memory, pressure and per-process caps.
//
// It is a plain state machine: `handle(input)` returns the effects the transport must carry
// out. It never reads a clock or a file and calls nothing outside itself; time, samples,
// process ancestry and who a control request comes from arrive as inputs, and replies to
// control requests and even its log lines leave as effects.

import { minJobsProblem } from './rules'
import {
  DEFAULT_RESERVATION_EXPIRY_MS,
  type Ancestries,
  type Caller,
  type ControlRequest,
  type Counters,
  type Effect,
  type ErrnoName,
  type Input,
  type PoolConfig,
  type PoolSnapshot,
  type PressureResource,
  type PressureSample,
  type Reading,
  type WaitReason,
} from './types'
import { WaitQueue, type Waiter } from './waitqueue'

/** The byte handed out for every token. Clients may write back any byte; we count, not compare. */
export const TOKEN_BYTE = 0x2b // '+', what GNU make writes

interface Proc {
  pid: number
  /** Tokens held. -1 after the one early return allowed to a process that never read. */
  held: number
  /** Grant time of each held token, oldest first. */
  grantedAt: number[]
  everRead: boolean
  /** It has made its one early return (whether or not the pool kept the token). */
  returnedEarly: boolean
  /** Reservations held for it. */
  reserved: number
  /** Open files this process opened (used only for pid 0, which has no pidfd). */
  openFiles: number
  /** The group this process belongs to, if any. */
  group: string | null
}

interface Group {
  name: string
  limit: number | null
  owner: number
  roots: Set<number>
}

interface Reservation {
  pid: number
  fh: number
  since: number
  expiresAt: number
}

const resKey = (fh: number, pid: number): string => `${fh}/${pid}`

export function defaultConfig(jobs: number): PoolConfig {
  return {
    jobs,
    minJobs: 1,
    loadAverage: null,
    loadRecheckMs: 500,
    minMemoryAvailMiB: null,
    perProcessLimit: null,
    reservationExpiryMs: DEFAULT_RESERVATION_EXPIRY_MS,
    maxCpuPressure: null,
    maxMemoryPressure: null,
    maxIoPressure: null,
  }
}

/** Memory first: it is the one that ends in the OOM killer. */
const PRESSURE_ORDER: readonly PressureResource[] = ['memory', 'io', 'cpu']

/** The limit set for a resource, or null (0 means no limit, as absent does). */
export function pressureLimit(c: PoolConfig, r: PressureResource): number | null {
  const v = r === 'cpu' ? c.maxCpuPressure : r === 'memory' ? c.maxMemoryPressure : c.maxIoPressure
  return v === null || v <= 0 ? null : v
}

/** Whether any pressure limit is set (then samples must carry pressure). */
export function wantsPressure(c: PoolConfig): boolean {
  return PRESSURE_ORDER.some((r) => pressureLimit(c, r) !== null)
}

export class Pool {
  private cfg: PoolConfig
  private readonly procs = new Map<number, Proc>()
  /** Opener of each open file, recorded at OPEN because RELEASE carries no pid. */
  private readonly openers = new Map<number, number>()
  /** Parked reads and sleeping pollers, in one FIFO order (see waitqueue.ts). */
  private readonly queue = new WaitQueue({
    procOpen: (pid) => !this.atProcessLimit(pid),
    groupOf: (pid) => this.procs.get(pid)?.group ?? null,
    groupOpen: (name) => !this.groupFull(name),
  })
  /** Processes holding at least one token. */
  private holderCount = 0
  /** Tokens held + reserved by the members of each group, kept as they change. */
  private readonly groupCount = new Map<string, number>()
  /** Processes whose early return is in the pool (held -1), oldest first. */
  private readonly earlyReturners = new Set<Proc>()
  /**
   * Reserved tokens, keyed by the open file the poller was told POLLIN on and the poller's
   * process (resKey): processes that share an open file (fork) each have their own.
   */
  private readonly reservations = new Map<string, Reservation>()
  private heldTotal = 0
  private sample: { load1: number; memAvailMiB: number; pressure: PressureSample | null; at: number } | null = null
  private timerAt: number | null = null
  private zeroFreeSince: number | null = null
  private lastNow = 0
  private readonly groups = new Map<string, Group>()
  /** Root pid -> group name. */
  private readonly groupRoots = new Map<number, string>()
  private readonly counters: Counters = {
    granted: 0,
    returned: 0,
    reclaimed: 0,
    enospc: 0,
    interrupts: 0,
    eagain: 0,
    reservationsExpired: 0,
    peakHolders: 0,
    msAtZeroFree: 0,
  }

  constructor(config: PoolConfig) {
    this.cfg = { ...config }
  }

  get config(): PoolConfig {
    return { ...this.cfg }
  }

  /** Tokens neither held nor reserved. Negative while a lowered `jobs` is being drained. */
  get free(): number {
    return this.cfg.jobs - this.heldTotal - this.reservations.size
  }

  /**
   * True when admission depends on a load, memory or pressure sample older than the recheck
   * period. With the input's `kind`: only a request for a token, or any input while someone
   * waits, needs one; a control tool opening the file or an exit with nobody waiting reads
   * nothing, so an idle pool costs nothing.
   */
  needsSample(now: number, kind?: Input['kind']): boolean {
    if (this.cfg.loadAverage === null && this.cfg.minMemoryAvailMiB === null && !wantsPressure(this.cfg)) return false
    if (kind !== undefined && kind !== 'read' && kind !== 'poll' && this.queue.size === 0) return false
    return this.sample === null || now - this.sample.at >= this.cfg.loadRecheckMs
  }

  /**
   * The pids whose ancestry `input` needs in its `ancestries` (see Ancestries): a process seen
   * for the first time while groups exist, or on a group join the root and every known process.
   * Empty for most inputs, so the io layer reads /proc only when membership can change.
   */
  ancestryWanted(input: Input): number[] {
    switch (input.kind) {
      case 'open':
      case 'read':
      case 'poll':
      case 'write':
        return this.groupRoots.size > 0 && input.pid !== 0 && !this.procs.has(input.pid) ? [input.pid] : []
      case 'control': {
        if (input.request.op !== 'join') return []
        const pids = new Set(this.procs.keys())
        pids.add(input.request.root)
        pids.delete(0)
        return [...pids]
      }
      default:
        return []
    }
  }

  handle(input: Input): Effect[] {
    const out: Effect[] = []
    this.lastNow = Math.max(this.lastNow, input.now)
    switch (input.kind) {
      case 'open': {
        this.openers.set(input.fh, input.pid)
        this.proc(input.pid, out, input.ancestries).openFiles++
        break
      }
      case 'read':
        this.onRead(input.req, input.fh, input.pid, input.nonblock, input.now, out, input.ancestries)
        break
      case 'poll':
        this.onPoll(input.req, input.fh, input.pid, input.wantsNotify, input.now, out, input.ancestries)
        break
      case 'write':
        this.onWrite(input.req, input.pid, input.count, input.now, out, input.ancestries)
        break
      case 'release':
        this.onRelease(input.fh, input.now, out)
        break
      case 'interrupt': {
        const w = this.queue.read(input.req)
        if (w) {
          this.queue.remove(w)
          this.counters.interrupts++
          out.push({ kind: 'reply-error', req: input.req, errno: 'EINTR' })
        }
        break
      }
      case 'exit':
        this.onExit(input.pid, input.now, out)
        break
      case 'tick':
        this.timerAt = null // the timer that brought us here has fired
        this.expireReservations(input.now)
        this.dispatch(input.now, out)
        break
      case 'sample':
        this.sample = { load1: input.load1, memAvailMiB: input.memAvailMiB, pressure: input.pressure ?? null, at: input.now }
        this.dispatch(input.now, out)
        break
      case 'configure':
        this.configure(input.patch)
        this.dispatch(input.now, out)
        break
      case 'control':
        this.onControl(input.req, input.caller, input.request, out, input.ancestries)
        this.dispatch(input.now, out)
        break
    }
    this.afterEvent(input.now, out)
    return out
  }

  // --- requests ------------------------------------------------------------

  private onRead(req: number, fh: number, pid: number, nonblock: boolean, now: number, out: Effect[], ancestries?: Ancestries): void {
    const p = this.proc(pid, out, ancestries)
    const res = this.reservationFor(fh, pid)
    if (res) {
      // The poller reads on the file it polled (or another of its own): its token is waiting.
      this.unreserve(res)
      this.grant(p, req, now, out)
      // Redeeming an early return's reservation lowers the count against the per-process
      // limit (-1 held counts as 0): a waiter of this process may be servable now.
      this.queue.changed(pid, p.group)
      this.dispatch(now, out)
      return
    }
    const w = this.queue.add('read', req, fh, pid, now)
    this.dispatch(now, out)
    if (nonblock && this.queue.has(w)) {
      this.queue.remove(w)
      this.counters.eagain++
      out.push({ kind: 'reply-error', req, errno: 'EAGAIN' })
    }
  }

  private onPoll(req: number, fh: number, pid: number, wantsNotify: boolean, now: number, out: Effect[], ancestries?: Ancestries): void {
    this.proc(pid, out, ancestries)
    if (!this.reservationFor(fh, pid)) {
      let w = this.queue.poll(fh, pid)
      const queued = w !== undefined
      if (!w) w = this.queue.add('poll', -1, fh, pid, now)
      this.dispatch(now, out, w)
      // A poll without a notify handle (poll with timeout 0) does not stay in the queue.
      if (!wantsNotify && !queued && this.queue.has(w)) this.queue.remove(w)
    }
    out.push({ kind: 'reply-poll', req, readable: this.reservationFor(fh, pid) !== undefined })
  }

  private onWrite(req: number, pid: number, count: number, now: number, out: Effect[], ancestries?: Ancestries): void {
    const p = this.proc(pid, out, ancestries)
    // One early return is allowed to a process that has not read yet (it may be handing
    // back a token its parent gave it before it starts reading: the nasm-rs pattern).
    // It joins the pool only while tokens are out (see dispatch: free never exceeds jobs).
    const allowance = !p.everRead && !p.returnedEarly && p.held === 0 ? 1 : 0
    if (count > p.held + allowance) {
      this.counters.enospc++
      out.push({ kind: 'reply-error', req, errno: 'ENOSPC' })
      return
    }
    if (count > p.held) p.returnedEarly = true
    this.adjust(p, -count, 0)
    this.queue.changed(pid, p.group)
    this.counters.returned += Math.max(0, count)
    // Returned tokens are taken as the most recently granted ones.
    p.grantedAt.splice(Math.max(0, p.grantedAt.length - count))
    out.push({ kind: 'reply-write', req, count })
    this.dispatch(now, out)
  }

  private onRelease(fh: number, now: number, out: Effect[]): void {
    for (const w of this.queue.pollsOn(fh)) this.queue.remove(w)
    for (const r of this.reservations.values()) if (r.fh === fh) this.unreserve(r)
    const pid = this.openers.get(fh)
    this.openers.delete(fh)
    if (pid === 0) {
      // Callers outside our pid namespace cannot be watched: when the last file any of them
      // opened is closed, whatever they still hold comes back.
      const p = this.procs.get(0)
      if (p && --p.openFiles <= 0) {
        const n = this.forget(p)
        if (n > 0) out.push({ kind: 'log', level: 'info', text: `the last file opened from outside our pid namespace was closed: reclaimed ${n} token${n === 1 ? '' : 's'}` })
      }
    }
    this.dispatch(now, out)
  }

  private configure(patch: Partial<PoolConfig>): void {
    const limit = this.cfg.perProcessLimit
    this.cfg = { ...this.cfg, ...patch }
    if (this.cfg.perProcessLimit !== limit) this.queue.reset()
  }

  // --- control requests ----------------------------------------------------

  /**
   * Answer a control request. Who may do what (docs/control.md): anyone who can open the pool
   * may read; settings change for admins only (root, the admin group). A group belongs to the
   * uid that created it: only that uid or an admin may join trees to it, change its limit or
   * dissolve it. Users move only their own processes, and never out of a group someone else owns.
   */
  private onControl(req: number, caller: Caller, request: ControlRequest, out: Effect[], ancestries?: Ancestries): void {
    const refuse = (errno: ErrnoName): void => void out.push({ kind: 'reply-error', req, errno })
    const who = `pid ${caller.pid} (uid ${caller.uid})`
    switch (request.op) {
      case 'get':
        out.push({ kind: 'reply-control', req, value: this.reading(request.what) })
        return
      case 'set': {
        if (!caller.admin) return refuse('EPERM')
        const next = { ...this.cfg, ...request.patch }
        if (minJobsProblem(next.minJobs, next.jobs) !== null) return refuse('EINVAL')
        this.configure(request.patch)
        out.push({ kind: 'log', level: 'info', text: `${who} set ${request.setting} to ${request.value ?? 'none'}` })
        break
      }
      case 'join': {
        const { name, root, limit, rootOwner } = request
        if (rootOwner === null) return refuse('ESRCH')
        const target = this.groups.get(name)
        if (!caller.admin) {
          if (rootOwner !== caller.uid) return refuse('EPERM')
          if (target && target.owner !== caller.uid) return refuse('EPERM')
          const current = this.groupOfProcess(root, ancestries?.[root])
          if (current && current.owner !== caller.uid) return refuse('EPERM')
        } else if (target && target.owner !== 0 && target.owner !== caller.uid && target.owner !== rootOwner) {
          // An admin brings another uid's processes into a group a user made: start it afresh,
          // so nobody can squat a name an admin will use and have their trees eat its cap.
          this.dissolve(target)
          out.push({ kind: 'log', level: 'info', text: `group ${name} of uid ${target.owner} dissolved: ${who} starts it afresh` })
        }
        this.onGroupJoin(name, root, limit, caller.uid, out, ancestries)
        this.regroup()
        out.push({ kind: 'log', level: 'info', text: `${who} put the tree of pid ${root} into group ${name} (limit ${limit ?? 'none'})` })
        break
      }
      case 'remove': {
        const g = this.groups.get(request.name)
        if (!g) return refuse('ENOENT')
        if (!caller.admin && g.owner !== caller.uid) return refuse('EPERM')
        this.dissolve(g)
        out.push({ kind: 'log', level: 'info', text: `${who} dissolved group ${request.name}` })
        break
      }
    }
    out.push({ kind: 'reply-control', req })
  }

  /** What a GET reads. */
  private reading(what: Reading): number | null {
    switch (what) {
      case 'free':
        return this.free
      case 'held':
        return this.heldTotal
      case 'reserved':
        return this.reservations.size
      case 'waiters':
        return this.queue.size
      default:
        return this.cfg[what]
    }
  }

  private onGroupJoin(name: string, root: number, limit: number | null, owner: number, out: Effect[], ancestries?: Ancestries): void {
    let g = this.groups.get(name)
    if (!g) {
      g = { name, limit, owner, roots: new Set() }
      this.groups.set(name, g)
    }
    g.limit = limit
    g.owner = owner
    const previous = this.groupRoots.get(root)
    if (previous !== undefined && previous !== name) this.groups.get(previous)?.roots.delete(root)
    g.roots.add(root)
    this.groupRoots.set(root, name)
    // The root must be watched so the group ends with it; known processes may now belong.
    this.proc(root, out, ancestries)
    for (const p of this.procs.values()) p.group = this.groupOf(p.pid, ancestries)
  }

  /**
   * The group a process belongs to now (known or not), by its nearest registered root;
   * `ancestry` is the process's own (itself first), which an unknown process is judged by.
   */
  groupOfProcess(pid: number, ancestry: readonly number[] = [pid]): { name: string; limit: number | null; owner: number } | null {
    const name = this.procs.get(pid)?.group ?? this.groupOf(pid, { [pid]: ancestry })
    const g = name === null ? undefined : this.groups.get(name)
    return g ? { name: g.name, limit: g.limit, owner: g.owner } : null
  }

  /** The group of the nearest registered root among a process and its ancestors. */
  private groupOf(pid: number, ancestries?: Ancestries): string | null {
    if (this.groupRoots.size === 0 || pid === 0) return null
    for (const a of ancestries?.[pid] ?? [pid]) {
      const g = this.groupRoots.get(a)
      if (g !== undefined) return g
    }
    return null
  }

  private dissolve(g: Group): void {
    for (const r of g.roots) this.groupRoots.delete(r)
    this.groups.delete(g.name)
    for (const p of this.procs.values()) if (p.group === g.name) p.group = null
    this.regroup()
  }

  private onExit(pid: number, now: number, out: Effect[]): void {
    const groupName = this.groupRoots.get(pid)
    if (groupName !== undefined) {
      // A group lives as long as one of its roots: when the last one is gone, so is the cap.
      const g = this.groups.get(groupName)!
      g.roots.delete(pid)
      this.groupRoots.delete(pid)
      if (g.roots.size === 0) this.dissolve(g)
    }
    const p = this.procs.get(pid)
    const held = p?.held ?? 0
    for (const w of this.queue.of(pid)) {
      if (w.how === 'read') out.push({ kind: 'reply-error', req: w.req, errno: 'EINTR' })
      this.queue.remove(w)
    }
    for (const r of this.reservations.values()) if (r.pid === pid) this.unreserve(r)
    if (p) this.forget(p)
    out.push({ kind: 'log', level: 'info', text: held > 0 ? `pid ${pid} exited holding ${held} token${held === 1 ? '' : 's'}: reclaimed` : `pid ${pid} exited` })
    this.dispatch(now, out)
  }

  // --- scheduling ------------------------------------------------------------

  /**
   * Serve the queue in order while tokens are free and global admission allows it. A waiter
   * whose own process is at its cap is skipped, not allowed to block those behind it.
   * `answering` is the waiter of the poll being answered right now: its reply says POLLIN,
   * so it needs no notify (other pollers of the same file, in other processes, do).
   */
  private dispatch(now: number, out: Effect[], answering?: Waiter): void {
    this.settleEarlyReturns()
    while (this.free > 0 && this.globalBlock() === null) {
      const w = this.queue.first()
      if (!w) break
      this.queue.remove(w)
      const p = this.proc(w.pid, out)
      if (w.how === 'read') {
        this.grant(p, w.req, now, out)
      } else {
        this.reservations.set(resKey(w.fh, w.pid), { pid: w.pid, fh: w.fh, since: now, expiresAt: now + this.cfg.reservationExpiryMs })
        this.adjust(p, 0, 1)
        if (w !== answering) out.push({ kind: 'notify-poll', fh: w.fh })
      }
    }
  }

  /**
   * An early return hands back a token someone else in the pool holds (the nasm-rs pattern).
   * When every token is free already, there is none to hand back: the pool never has more
   * than `jobs` free tokens, so the oldest early returns still in the pool are dropped from
   * it (their writes stayed successful) until it does not. Without this, N processes that
   * never read could each add one token.
   */
  private settleEarlyReturns(): void {
    for (const p of this.earlyReturners) {
      if (this.free <= this.cfg.jobs) break
      this.adjust(p, 1, 0)
    }
  }

  /**
   * Change what a process holds and has reserved, keeping the totals that admission reads in
   * O(1): held total, holders, each group's tokens, and the early returns in the pool.
   */
  private adjust(p: Proc, dHeld: number, dReserved: number): void {
    const before = Math.max(0, p.held) + p.reserved
    const wasHolder = p.held > 0
    p.held += dHeld
    p.reserved += dReserved
    this.heldTotal += dHeld
    if (p.held > 0 !== wasHolder) this.holderCount += wasHolder ? -1 : 1
    if (p.group !== null) {
      const d = Math.max(0, p.held) + p.reserved - before
      if (d !== 0) this.groupCount.set(p.group, (this.groupCount.get(p.group) ?? 0) + d)
    }
    if (p.held < 0) this.earlyReturners.add(p)
    else this.earlyReturners.delete(p)
  }

  private unreserve(r: Reservation): void {
    this.reservations.delete(resKey(r.fh, r.pid))
    const p = this.procs.get(r.pid)
    if (p) {
      this.adjust(p, 0, -1)
      this.queue.changed(p.pid, p.group)
    }
  }

  /** Group memberships changed: count each group's tokens afresh and re-offer every waiter. */
  private regroup(): void {
    this.groupCount.clear()
    for (const p of this.procs.values()) {
      if (p.group !== null) this.groupCount.set(p.group, (this.groupCount.get(p.group) ?? 0) + Math.max(0, p.held) + p.reserved)
    }
    this.queue.reset()
  }

  private grant(p: Proc, req: number, now: number, out: Effect[]): void {
    // A process that returned one token early reads it back first: nothing to age.
    if (p.held >= 0) p.grantedAt.push(now)
    this.adjust(p, 1, 0)
    p.everRead = true
    this.counters.granted++
    out.push({ kind: 'reply-token', req, byte: TOKEN_BYTE })
  }

  /** Why nobody can be served right now apart from per-process caps; null if admission is open. */
  private globalBlock(): WaitReason | null {
    if (this.free <= 0) return 'no-tokens'
    const s = this.sample
    if (this.cfg.minMemoryAvailMiB !== null && s && s.memAvailMiB < this.cfg.minMemoryAvailMiB) return 'memory'
    if (!s || this.heldTotal + this.reservations.size < this.cfg.minJobs) return null
    if (this.cfg.loadAverage !== null && s.load1 > this.cfg.loadAverage) return 'load'
    if (s.pressure) {
      for (const r of PRESSURE_ORDER) {
        const limit = pressureLimit(this.cfg, r)
        const v = s.pressure[r]
        if (limit !== null && v !== null && v > limit) return `pressure:${r}`
      }
    }
    return null
  }

  private atProcessLimit(pid: number): boolean {
    if (this.cfg.perProcessLimit === null) return false
    const p = this.procs.get(pid)
    return (p ? Math.max(0, p.held) + p.reserved : 0) >= this.cfg.perProcessLimit
  }

  /** Tokens held + reserved by the members of a group. */
  private groupTokens(name: string): number {
    return this.groupCount.get(name) ?? 0
  }

  private groupFull(name: string): boolean {
    const limit = this.groups.get(name)?.limit ?? null
    return limit !== null && this.groupTokens(name) >= limit
  }

  private atGroupLimit(pid: number): boolean {
    const name = this.procs.get(pid)?.group
    if (!name) return false
    const limit = this.groups.get(name)?.limit ?? null
    return limit !== null && this.groupTokens(name) >= limit
  }

  private expireReservations(now: number): void {
    for (const [k, r] of this.reservations) {
      if (r.expiresAt <= now) {
        this.unreserve(r)
        this.counters.reservationsExpired++
      }
    }
  }

  private reservationFor(fh: number, pid: number): Reservation | undefined {
    const own = this.reservations.get(resKey(fh, pid))
    if (own && own.pid === pid) return own
    for (const r of this.reservations.values()) if (r.pid === pid) return r
    return undefined
  }

  /** Bookkeeping after every input: counters, and the one timer the pool needs. */
  private afterEvent(now: number, out: Effect[]): void {
    this.counters.peakHolders = Math.max(this.counters.peakHolders, this.holderCount)

    if (this.free <= 0) {
      if (this.zeroFreeSince === null) this.zeroFreeSince = now
    } else if (this.zeroFreeSince !== null) {
      this.counters.msAtZeroFree += now - this.zeroFreeSince
      this.zeroFreeSince = null
    }

    let at: number | null = null
    for (const r of this.reservations.values()) at = at === null ? r.expiresAt : Math.min(at, r.expiresAt)
    const blocked = this.queue.size > 0 ? this.globalBlock() : null
    if (blocked !== null && blocked !== 'no-tokens') {
      // Re-sample only while someone waits on load, memory or pressure.
      const recheck = (this.sample?.at ?? now) + this.cfg.loadRecheckMs
      at = at === null ? recheck : Math.min(at, recheck)
    }
    if (at !== this.timerAt) {
      this.timerAt = at
      out.push({ kind: 'timer', at })
    }
  }

  private proc(pid: number, out: Effect[], ancestries?: Ancestries): Proc {
    let p = this.procs.get(pid)
    if (!p) {
      p = { pid, held: 0, grantedAt: [], everRead: false, returnedEarly: false, reserved: 0, openFiles: 0, group: null }
      p.group = this.groupOf(pid, ancestries)
      this.procs.set(pid, p)
      if (pid !== 0) out.push({ kind: 'watch', pid })
    }
    return p
  }

  /** Drop a process and take back what it holds; returns how many tokens that was. */
  private forget(p: Proc): number {
    const reclaimed = Math.max(0, p.held)
    this.counters.reclaimed += reclaimed
    this.adjust(p, -p.held, 0)
    this.procs.delete(p.pid)
    if (p.group !== null) this.queue.changed(p.pid, p.group)
    return reclaimed
  }

  // --- inspection ------------------------------------------------------------

  /** Tokens a process holds now (0 for an unknown one; -1 after its early return). */
  heldBy(pid: number): number {
    return this.procs.get(pid)?.held ?? 0
  }

  /** Tokens taken back from exited processes since start. */
  get reclaimedTotal(): number {
    return this.counters.reclaimed
  }

  snapshot(now: number = this.lastNow): PoolSnapshot {
    const holders = [...this.procs.values()]
      .filter((p) => p.held > 0)
      .map((p) => ({ pid: p.pid, tokens: p.held, heldForMs: p.grantedAt.map((t) => now - t) }))
    const global = this.globalBlock()
    const waiters = this.queue.ordered().map((w) => ({
      pid: w.pid,
      fh: w.fh,
      how: w.how,
      waitingForMs: now - w.since,
      reason: global ?? (this.atProcessLimit(w.pid) ? 'per-process-limit' : this.atGroupLimit(w.pid) ? 'group-limit' : 'no-tokens'),
    }))
    const groups = [...this.groups.values()].map((g) => ({
      name: g.name,
      limit: g.limit,
      owner: g.owner,
      roots: [...g.roots],
      members: [...this.procs.values()].filter((p) => p.group === g.name).map((p) => p.pid),
      tokens: this.groupTokens(g.name),
    }))
    const reservations = [...this.reservations.values()].map((r) => ({
      pid: r.pid,
      fh: r.fh,
      ageMs: now - r.since,
      expiresInMs: r.expiresAt - now,
    }))
    const counters = { ...this.counters }
    if (this.zeroFreeSince !== null) counters.msAtZeroFree += now - this.zeroFreeSince
    return {
      config: this.config,
      jobs: this.cfg.jobs,
      free: this.free,
      held: this.heldTotal,
      reserved: this.reservations.size,
      lastSample: this.sample
        ? { load1: this.sample.load1, memAvailMiB: this.sample.memAvailMiB, pressure: this.sample.pressure, ageMs: now - this.sample.at }
        : null,
      holders,
      waiters,
      reservations,
      groups,
      counters,
    }
  }

  /** Internal consistency, for tests: returns the list of violated invariants. */
  checkInvariants(): string[] {
    const bad: string[] = []
    let sum = 0
    for (const p of this.procs.values()) {
      sum += p.held
      if (p.held < -1) bad.push(`pid ${p.pid} holds ${p.held}`)
      if (p.held >= 0 && p.grantedAt.length !== p.held) bad.push(`pid ${p.pid}: ${p.grantedAt.length} grant times for ${p.held} tokens`)
    }
    if (sum !== this.heldTotal) bad.push(`held total ${this.heldTotal} != sum over processes ${sum}`)
    if (this.free + this.heldTotal + this.reservations.size !== this.cfg.jobs) bad.push('free + held + reserved != jobs')
    for (const r of this.reservations.values()) if (!this.procs.has(r.pid)) bad.push(`reservation for gone pid ${r.pid}`)
    const queued = this.queue.ordered()
    for (const w of queued) if (!this.procs.has(w.pid)) bad.push(`waiter for gone pid ${w.pid}`)
    const reqs = queued.filter((w) => w.how === 'read').map((w) => w.req)
    if (new Set(reqs).size !== reqs.length) bad.push('a read is queued twice')
    let holders = 0
    const groupCount = new Map<string, number>()
    for (const p of this.procs.values()) {
      if (p.held > 0) holders++
      let reserved = 0
      for (const r of this.reservations.values()) if (r.pid === p.pid) reserved++
      if (reserved !== p.reserved) bad.push(`pid ${p.pid}: ${p.reserved} reservations counted, ${reserved} kept`)
      if (p.group !== null) groupCount.set(p.group, (groupCount.get(p.group) ?? 0) + Math.max(0, p.held) + reserved)
      if ((p.held < 0) !== this.earlyReturners.has(p)) bad.push(`pid ${p.pid}: early return bookkeeping`)
    }
    if (holders !== this.holderCount) bad.push(`${this.holderCount} holders counted, ${holders} hold`)
    for (const [g, n] of groupCount) if (this.groupTokens(g) !== n) bad.push(`group ${g}: ${this.groupTokens(g)} tokens counted, ${n} held`)
    if (this.earlyReturners.size > 0 && this.free > this.cfg.jobs) bad.push(`free ${this.free} > jobs with early returns in the pool`)
    // Nobody may wait while a token is free and admission would let them in.
    if (this.globalBlock() === null && queued.some((w) => !this.atProcessLimit(w.pid) && !this.atGroupLimit(w.pid))) {
      bad.push('a servable waiter waits')
    }
    for (const [root, name] of this.groupRoots) if (!this.groups.get(name)?.roots.has(root)) bad.push(`root ${root} of a gone group`)
    return bad
  }
}
