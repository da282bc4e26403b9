// The token server: a transport session (FUSE file or CUSE device) wired to the pool.
// Requests become pool inputs; pool effects become replies, poll notifications, pidfd
// watches and one timer.

import * as os from 'node:os'
import { performance } from 'node:perf_hooks'

import {
  Pool,
  pressureLimit,
  type Caller,
  type ControlRequest,
  type Effect,
  type ErrnoName,
  type Input,
  type PoolConfig,
  type PoolSnapshot,
  type PressureResource,
  type PressureSample,
} from '../core'
import { RequestKind, type Addon, type NativeSession, type RequestCallback } from '../native'
import { PressureReader } from './pressure'
import { ThreadMap, ancestryOf, groupsOf, sampleMachine, uidOf, type MachineSample } from './procfs'
import type { Endpoint, StartInfo } from './transport'
import { ProcessWatcher } from './watcher'

const POLLIN = 0x001
const POLLOUT = 0x004
const POLLRDNORM = 0x040
const POLLWRNORM = 0x100
const O_NONBLOCK = 0o4000 // Linux x86-64 and arm64: the flag a read request carries in its file flags

const E = os.constants.errno
const ERRNO: Record<ErrnoName, number> = { EAGAIN: E.EAGAIN, EINTR: E.EINTR, ENOSPC: E.ENOSPC, EPERM: E.EPERM, EINVAL: E.EINVAL, ESRCH: E.ESRCH, ENOENT: E.ENOENT }

export interface ServerDeps {
  addon: Addon
  /** Monotonic clock in ms. */
  now?: () => number
  sample?: () => MachineSample
  /** `some avg10` of the resources asked for (default: /proc/pressure). */
  pressure?: (resources: readonly PressureResource[]) => PressureSample
  threads?: ThreadMap
  /** Process ancestry for group membership (default: /proc). */
  ancestry?: (pid: number) => number[]
  /** The control ioctls (none: every ioctl is ENOTTY). */
  control?: ControlPlane
  log?: (level: 'info' | 'debug' | 'warn', msg: string) => void
}

export interface IoctlRequest {
  cmd: number
  pid: number
  uid: number
  gid: number
  input: Buffer
  outSize: number
}

/**
 * A control ioctl, decoded: refused for its form, answered without the pool (status chunks,
 * the admin group), or a request for the pool with, for a read, how to encode its value.
 */
export type ControlDecoded =
  | { errno: number }
  | { result: number; data?: Buffer }
  | { request: ControlRequest; encode?: (value: number | null) => Buffer }

/** The control protocol's server side (control/server.ts), as the token server uses it. */
export interface ControlPlane {
  decode(req: IoctlRequest): ControlDecoded
  /** The admin group's gid now, or null: only root is an admin. */
  adminGid(): number | null
  /** A watched process is gone (after the pool has taken back its tokens). */
  exited(pid: number): void
}

const MAX_TIMER_MS = 2 ** 31 - 1
const PRESSURE_RESOURCES: readonly PressureResource[] = ['cpu', 'memory', 'io']

export class TokenServer {
  readonly pool: Pool
  private readonly session: NativeSession
  private readonly watcher: ProcessWatcher
  private readonly threads: ThreadMap
  private readonly now: () => number
  private readonly sample: () => MachineSample
  private readonly pressure: (resources: readonly PressureResource[]) => PressureSample
  private readonly log: (level: 'info' | 'debug' | 'warn', msg: string) => void
  private readonly ancestry: (pid: number) => number[]
  private readonly control: ControlPlane | null
  /** How to encode the value of each control read the pool has not answered yet. */
  private readonly encoders = new Map<number, (value: number | null) => Buffer>()
  private timer: NodeJS.Timeout | null = null
  private readonly token = Buffer.from('+')
  private closed = false
  private endpoint: Endpoint | null = null
  private readyResolve!: () => void
  private goneHandlers: Array<(why: number) => void> = []
  private readonly exitHandlers: Array<(pid: number) => void> = []
  /** Resolves when the kernel says the file or device is usable. */
  readonly ready: Promise<void>

  constructor(config: PoolConfig, deps: ServerDeps) {
    this.pool = new Pool(config)
    this.ancestry = deps.ancestry ?? ((pid) => ancestryOf(pid))
    this.control = deps.control ?? null
    this.now = deps.now ?? (() => performance.now())
    this.sample = deps.sample ?? (() => sampleMachine())
    this.threads = deps.threads ?? new ThreadMap()
    this.log = deps.log ?? (() => {})
    if (deps.pressure) this.pressure = deps.pressure
    else {
      const reader = new PressureReader(undefined, (msg) => this.log('warn', msg))
      this.pressure = (r) => reader.read(r)
    }
    this.ready = new Promise((resolve) => (this.readyResolve = resolve))
    this.watcher = new ProcessWatcher(
      deps.addon,
      (pid) => {
        this.onProcessExit(pid)
        this.control?.exited(pid)
        for (const fn of this.exitHandlers) fn(pid)
      },
      (msg) => this.log('warn', msg),
    )
    this.session = new deps.addon.Session(this.onRequest)
  }

  /** A watched process is gone: the pool takes back what it held (and says so under -v). */
  private onProcessExit(pid: number): void {
    this.threads.forget(pid)
    this.feed({ kind: 'exit', pid, now: this.now() })
  }

  /** Start serving through `endpoint` (mount the file or register the device). Once. */
  start(endpoint: Endpoint): StartInfo {
    if (this.endpoint) throw new Error('TokenServer.start: already started')
    this.endpoint = endpoint
    return endpoint.open(this.session)
  }

  onGone(fn: (why: number) => void): void {
    this.goneHandlers.push(fn)
  }

  /** Be told when a watched process exits (after the pool has taken back its tokens). */
  onExit(fn: (pid: number) => void): void {
    this.exitHandlers.push(fn)
  }

  /** Apply a runtime configuration change (waiters are served at once if it allows). */
  configure(patch: Partial<PoolConfig>): void {
    this.feed({ kind: 'configure', patch, now: this.now() })
  }

  snapshot(): PoolSnapshot {
    return this.pool.snapshot(this.now())
  }

  get watchedProcesses(): number {
    return this.watcher.size
  }

  /** Every request the native session cannot answer alone (the arguments: native.ts RequestCallback). */
  private readonly onRequest: RequestCallback = (kind, id, fh, tid, uid, gid, a, b, data) => {
    const now = this.now()
    switch (kind) {
      case RequestKind.Open:
        this.feed({ kind: 'open', fh, pid: this.threads.tgid(tid), now })
        break
      case RequestKind.Read: {
        const pid = this.threads.tgid(tid)
        this.log('debug', `read req=${id} fh=${fh} tid=${tid} pid=${pid}${a & O_NONBLOCK ? ' nonblock' : ''}`)
        this.feed({ kind: 'read', req: id, fh, pid, nonblock: (a & O_NONBLOCK) !== 0, now })
        break
      }
      case RequestKind.Write:
        this.feed({ kind: 'write', req: id, fh, pid: this.threads.tgid(tid), count: b, now })
        break
      case RequestKind.Poll:
        this.feed({ kind: 'poll', req: id, fh, pid: this.threads.tgid(tid), wantsNotify: a === 1, now })
        break
      case RequestKind.Release:
        this.feed({ kind: 'release', fh, now })
        break
      case RequestKind.Interrupt:
        this.log('debug', `interrupt req=${id}`)
        this.feed({ kind: 'interrupt', req: id, now })
        break
      case RequestKind.Ioctl:
        this.onIoctl(id, { cmd: a >>> 0, pid: this.threads.tgid(tid), uid, gid, input: data ?? Buffer.alloc(0), outSize: b })
        break
      case RequestKind.Ready:
        this.readyResolve()
        break
      case RequestKind.Gone:
        if (!this.closed) for (const fn of this.goneHandlers) fn(a)
        break
    }
  }

  /**
   * A control ioctl: decoded by the control plane; what it asks of the pool goes in as a
   * `control` input, with who is asking (an admin: root, or a member of the admin group by
   * the request's gid or the process's groups) and, for a join, whom the root belongs to.
   */
  private onIoctl(id: number, req: IoctlRequest): void {
    const d: ControlDecoded = this.control ? this.control.decode(req) : { errno: E.ENOTTY }
    if ('errno' in d) {
      this.session.replyError(id, d.errno)
      return
    }
    if ('result' in d) {
      this.session.replyIoctl(id, d.result, d.data)
      return
    }
    const admin = this.control!.adminGid()
    const caller: Caller = {
      pid: req.pid,
      uid: req.uid,
      admin: req.uid === 0 || (admin !== null && (req.gid === admin || groupsOf(req.pid).includes(admin))),
    }
    const request = d.request.op === 'join' ? { ...d.request, rootOwner: uidOf(d.request.root) } : d.request
    if (d.encode) this.encoders.set(id, d.encode)
    this.feed({ kind: 'control', req: id, caller, request, now: this.now() })
  }

  /**
   * Hand one input to the pool, with a fresh machine sample first if admission needs it and
   * the ancestry of the processes whose group membership it decides.
   */
  feed(input: Input): void {
    if (this.closed) return
    const wanted = this.pool.ancestryWanted(input)
    // Only the kinds that take ancestries ever want any (Pool.ancestryWanted).
    if (wanted.length > 0) input = { ...input, ancestries: Object.fromEntries(wanted.map((pid) => [pid, this.ancestry(pid)])) } as Input
    if (input.kind !== 'sample' && this.pool.needsSample(input.now, input.kind)) {
      const s = this.sample()
      // Only the resources with a limit are read: the others cannot block anyone.
      const cfg = this.pool.config
      const wanted = PRESSURE_RESOURCES.filter((r) => pressureLimit(cfg, r) !== null)
      const pressure = wanted.length > 0 ? this.pressure(wanted) : undefined
      this.apply(this.pool.handle({ kind: 'sample', load1: s.load1, memAvailMiB: s.memAvailMiB, pressure, now: input.now }))
    }
    this.apply(this.pool.handle(input))
  }

  private apply(effects: Effect[]): void {
    for (const e of effects) {
      switch (e.kind) {
        case 'reply-token':
          this.session.replyData(e.req, this.token)
          break
        case 'reply-error':
          this.encoders.delete(e.req)
          this.session.replyError(e.req, ERRNO[e.errno])
          break
        case 'reply-write':
          this.session.replyWrite(e.req, e.count)
          break
        case 'reply-control': {
          const encode = this.encoders.get(e.req)
          this.encoders.delete(e.req)
          this.session.replyIoctl(e.req, 0, encode && e.value !== undefined ? encode(e.value) : undefined)
          break
        }
        case 'reply-poll':
          this.session.replyPoll(e.req, POLLOUT | POLLWRNORM | (e.readable ? POLLIN | POLLRDNORM : 0))
          break
        case 'notify-poll':
          this.session.notifyPoll(e.fh)
          break
        case 'watch':
          this.watcher.watch(e.pid)
          break
        case 'timer':
          this.arm(e.at)
          break
        case 'log':
          this.log(e.level, e.text)
          break
      }
    }
  }

  private arm(at: number | null): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    if (at === null || this.closed) return
    // Node fires a timer longer than 2^31 - 1 ms after 1 ms instead: wake at most that late, and
    // the tick re-arms for what is left.
    this.timer = setTimeout(() => {
      this.timer = null
      this.feed({ kind: 'tick', now: this.now() })
    }, Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(at - this.now()))))
  }

  /** Stop serving: unmount (through the endpoint's kept handle) or unregister, stop watching. Safe to call twice. */
  close(): void {
    if (this.closed) return
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    this.watcher.close()
    this.session.close(this.endpoint?.unmountPath())
    this.endpoint?.close()
  }
}
