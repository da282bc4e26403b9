// JobClient: take tokens from a GNU make jobserver and give them back, the way a careful client
// must (research/clients.md sections 1c, 9 and 10).
//
// Acquisition is "poll, then read", on the loop thread:
//   1. a caller waits: start a uv_poll on our read fd (never a blocking read on a libuv worker
//      thread, never a spin);
//   2. the fd is readable: at once, in the same callback, one non-blocking 1-byte read per
//      waiting caller on that same fd;
//   3. EAGAIN (another client sniped the token) or EINTR: poll again; 0 bytes (EOF) is a broken
//      jobserver, reported as ERR_JOBSERVER_EOF rather than spun on.
// The poll runs only while someone waits. steved reserves a token for a poller that it told
// "readable" until that poller reads; a client that polled without meaning to read would sit
// on that reservation and starve everyone else. So: no waiters, no poll. Stopping our uv_poll
// is not enough, though: a FUSE or CUSE server is never told that a poll ended, so steved
// keeps our poll queued (and later reserves a token for it) until the open file is released.
// When the last waiter leaves without a token (abort, cancel), the file is therefore opened
// anew and the old one closed; FIFOs and pipes keep no such state and are left alone.
//
// Tokens go back as the byte that was read (make's manual: "write back the same character";
// ninja's TECHNICAL NOTE). The implicit slot (the one job every make runs without a token) is
// a first-class Token when `implicitSlot` is set: the first concurrent holder gets it without a
// read, and releasing it just frees the slot for the next caller.
import * as fs from 'node:fs'
import * as os from 'node:os'
import { abortError, JobserverError, systemError } from './errors'
import * as exitHooks from './exit-hooks'
import { fromEnv, type JobserverAuth } from './makeflags'
import { loadNative, type Native, type NativePoller } from './native'
import { closeJobserver, openJobserver, type OpenedJobserver } from './open'

const { EAGAIN, EINTR } = os.constants.errno

// steved's control ioctl (docs/control.md): read a setting. jobclient asks for the pool size
// so that a wait for more tokens than can ever be out at once fails at once instead of never
// ending. Any other jobserver answers ENOTTY (or EINVAL) and is simply waited on.
const STEVED_IOC_GET = 0xc0106a01
const STEVED_KEY_JOBS = 0
const STEVED_KEY_PER_PROCESS_LIMIT = 5
const STEVED_FLAG_NONE = 1

/** Fields every token has. */
interface TokenBase {
  /** Unique within its client, increasing; the agent protocol uses it as the token's name. */
  readonly id: number
  /** True once the token went back (or its client was closed). */
  readonly released: boolean
  /**
   * Give the token back: write its byte back to the jobserver, or free the implicit slot.
   * Idempotent: returns true the first time, false after. Throws a system error if the write
   * fails (the token is then lost to this client either way).
   */
  release(): boolean
}

/** The slot a process has without reading: no byte, nothing to write back. */
export interface ImplicitToken extends TokenBase {
  readonly kind: 'implicit'
}

/** A byte read from the jobserver; the same byte is written back. */
export interface ExplicitToken extends TokenBase {
  readonly kind: 'explicit'
  readonly byte: number
}

/** One job slot held by this process. */
export type Token = ImplicitToken | ExplicitToken

/** Options of {@link JobClient}. */
export interface JobClientOptions {
  /**
   * Count the implicit slot as a token: the first concurrent `acquire()` gets it without
   * reading. True for code that runs as a job of make (a recipe), whose own slot is already
   * paid for. Default false: every token is read from the jobserver.
   */
  implicitSlot?: boolean
  /**
   * Give tokens back on SIGINT, SIGTERM and SIGHUP, then die by that signal as usual; only
   * when nobody else listens to the signal (see exit-hooks.ts). Default true. Tokens are
   * always given back on a normal exit.
   */
  handleSignals?: boolean
  /** The native layer; tests pass a fake. Default: the compiled addon. */
  native?: Native
}

/** Options of {@link JobClient.fromEnv}. */
export interface FromEnvOptions extends JobClientOptions {
  /** Where to look for MAKEFLAGS and friends. Default process.env. */
  env?: NodeJS.ProcessEnv
  /**
   * Paths tried, in order, when no variable names a jobserver at all (e.g.
   * {@link DEFAULT_JOBSERVER_PATHS}). Default: none.
   */
  fallbackPaths?: readonly string[]
}

/** Options of {@link JobClient.acquire}. */
export interface AcquireOptions {
  /** Abort the wait: the promise rejects with an AbortError and nothing stays held. */
  signal?: AbortSignal
}

/** Options of {@link JobClient.acquireMany}. */
export interface AcquireManyOptions extends AcquireOptions {
  /**
   * How long a partial set may wait for its next token before it is given back, in ms; grows
   * with each retry. Default 200.
   */
  stallMs?: number
  /** Upper bound of the back-off pause between attempts, in ms. Default 5000. */
  maxBackoffMs?: number
  /** Source of jitter in [0, 1); tests pass a fixed one. Default Math.random. */
  random?: () => number
}

/**
 * steved's default paths, in stevectl's order: the CUSE device (steve's name, which more
 * clients accept than a regular file), then steved's FUSE file.
 */
export const DEFAULT_JOBSERVER_PATHS: readonly string[] = ['/dev/steve', '/run/steved/jobserver']
/** The file steved's FUSE transport mounts over by default (the second default path). */
export const DEFAULT_FUSE_PATH = DEFAULT_JOBSERVER_PATHS[1]

// A caller waiting for a token. settle/fail are called at most once, synchronously.
interface Waiter {
  settle(token: Token): void
  fail(error: unknown): void
}

class TokenImpl {
  readonly id: number
  readonly kind: 'implicit' | 'explicit'
  readonly byte: number | undefined
  #released = false
  readonly #giveBack: (t: TokenImpl) => void
  constructor(id: number, kind: 'implicit' | 'explicit', byte: number | undefined, giveBack: (t: TokenImpl) => void) {
    this.id = id
    this.kind = kind
    this.byte = byte
    this.#giveBack = giveBack
  }
  get released(): boolean {
    return this.#released
  }
  release(): boolean {
    if (this.#released) return false
    this.#released = true
    this.#giveBack(this)
    return true
  }
}

/** A client of one jobserver. See the package README for the whole story. */
export class JobClient {
  /** Where this client's tokens come from, as named by the environment or the caller. */
  readonly auth: JobserverAuth
  /** See {@link JobClientOptions.handleSignals}. */
  readonly handleSignals: boolean
  readonly #native: Native
  readonly #opened: OpenedJobserver
  readonly #implicitSlot: boolean
  // The poll handle, created on first need; polling is true while it is started.
  #poller: NativePoller | undefined
  #polling = false
  // Callers waiting for a token, served first come, first served.
  readonly #waiters: Waiter[] = []
  // Tokens handed out and not yet given back; all of them go back at close() and exit.
  readonly #held = new Set<TokenImpl>()
  // The implicit slot is free (only meaningful with implicitSlot).
  #implicitFree: boolean
  #nextId = 1
  #closed = false
  // The read fd is a FUSE file or a character device: a server may keep our poll queued after
  // we stop polling (see the top of this file), so a wait that ends without a token reopens it.
  readonly #serverKeepsPolls: boolean
  // Scratch buffer of the 1-byte reads; reads happen one at a time on the loop thread.
  readonly #buf = Buffer.alloc(1)

  /**
   * Open the jobserver named by the environment: CARGO_MAKEFLAGS, MAKEFLAGS, MFLAGS (the first
   * one set decides), else the first existing `fallbackPaths` entry. Throws
   * ERR_JOBSERVER_NO_ENV when there is none, ERR_JOBSERVER_BAD_AUTH, and what
   * {@link JobClient.open} throws.
   */
  static fromEnv(options: FromEnvOptions = {}): JobClient {
    const { env = process.env, fallbackPaths = [], ...clientOptions } = options
    const found = fromEnv(env)
    if (found?.auth) return new JobClient(found.auth, clientOptions)
    if (found && (found.dryRun || found.invalidated)) {
      const why = found.dryRun
        ? 'make runs in dry-run mode (-n)'
        : "make withheld its jobserver from this command (mark the recipe with '+' to pass it)"
      throw new JobserverError('ERR_JOBSERVER_NO_ENV', `no jobserver: ${found.source} says ${why}`)
    }
    for (const path of fallbackPaths) {
      if (pathExists(path)) return new JobClient({ style: 'fifo', path }, clientOptions)
    }
    const where = found ? `${found.source} names no jobserver` : 'no CARGO_MAKEFLAGS, MAKEFLAGS or MFLAGS is set'
    const tried = fallbackPaths.length > 0 ? ` and steved is not running (none of ${fallbackPaths.join(', ')} exists)` : ''
    throw new JobserverError('ERR_JOBSERVER_NO_ENV', `no jobserver: ${where}${tried}`)
  }

  /** Open a jobserver by auth or by path (a FIFO, a character device or a FUSE file). */
  static open(target: JobserverAuth | string, options: JobClientOptions = {}): JobClient {
    return new JobClient(typeof target === 'string' ? { style: 'fifo', path: target } : target, options)
  }

  /** Prefer {@link JobClient.open} or {@link JobClient.fromEnv}. */
  constructor(auth: JobserverAuth, options: JobClientOptions = {}) {
    this.auth = auth
    this.#native = options.native ?? loadNative()
    this.#implicitSlot = options.implicitSlot ?? false
    this.#implicitFree = this.#implicitSlot
    this.handleSignals = options.handleSignals ?? true
    this.#opened = openJobserver(auth)
    this.#serverKeepsPolls = auth.style === 'fifo' && !isFifoFd(this.#opened.readFd)
    exitHooks.register(this)
  }

  /** The path reads go to (the FIFO or device, or /proc/self/fd/R for a pipe). */
  get path(): string {
    return this.#opened.path
  }

  /** The fd tokens are read from (for passing to a child as `R,W`). */
  get readFd(): number {
    return this.#opened.readFd
  }

  /** The fd tokens are written back to (equal to readFd for a `fifo:` jobserver). */
  get writeFd(): number {
    return this.#opened.writeFd
  }

  /**
   * The same jobserver in `fifo:` form, for a child's MAKEFLAGS. For a pipe this is
   * /proc/PID/fd/N of this process, valid while it lives (it waits for its children).
   */
  get childAuth(): JobserverAuth {
    return { style: 'fifo', path: this.#opened.childPath }
  }

  /** Tokens held now, the implicit one included. */
  get held(): number {
    return this.#held.size
  }

  /** Calls waiting for a token. */
  get pending(): number {
    return this.#waiters.length
  }

  /** Whether the fd is being polled now (only while someone waits). Diagnostic. */
  get polling(): boolean {
    return this.#polling
  }

  /** True after close(). */
  get closed(): boolean {
    return this.#closed
  }

  /**
   * Wait for a token. Resolves with the implicit token if it is free and nobody waits, else
   * with a byte read from the jobserver. Rejects with an AbortError (`code` 'ABORT_ERR') when
   * `signal` aborts, ERR_JOBSERVER_CLOSED when the client closes, ERR_JOBSERVER_EOF or a system
   * error when the jobserver fails. A rejected acquire holds nothing.
   */
  acquire(options: AcquireOptions = {}): Promise<Token> {
    const { signal } = options
    return new Promise<Token>((resolve, reject) => {
      if (signal?.aborted) return reject(abortError(signal))
      let cancel: (() => void) | undefined
      const onAbort = () => {
        cancel?.()
        reject(abortError(signal!))
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      cancel = this.#enqueue({
        settle: (token) => {
          signal?.removeEventListener('abort', onAbort)
          resolve(token)
        },
        fail: (error) => {
          signal?.removeEventListener('abort', onAbort)
          reject(error)
        },
      })
    })
  }

  /**
   * Take a token if one is there now, else return null; never waits. Does not jump ahead of
   * callers already waiting in this client (returns null while any do).
   */
  tryAcquire(): Token | null {
    this.#assertOpen()
    if (this.#waiters.length > 0) return null
    if (this.#implicitFree) return this.#takeImplicit()
    const r = this.#native.read(this.#opened.readFd, this.#buf)
    if (r === 1) return this.#newToken('explicit', this.#buf[0])
    if (r === -EAGAIN || r === -EINTR) return null
    if (r === 0) throw this.#eofError()
    throw systemError(r, 'read', this.#opened.path)
  }

  /**
   * Run `fn` while holding one token; the token goes back when `fn` settles, even if it throws.
   */
  async withToken<T>(fn: (token: Token) => T | Promise<T>, options: AcquireOptions = {}): Promise<T> {
    const token = await this.acquire(options)
    try {
      return await fn(token)
    } finally {
      token.release()
    }
  }

  /**
   * Wait for `n` tokens at once, for a tool that runs n things without speaking the protocol.
   *
   * A jobserver has no atomic "give me n": two clients that each take tokens one by one can
   * each end up holding part of what they need while the pool is empty, forever. Strategy:
   *   - ask for all n at once (one waiter each, so a single readiness event can fill several);
   *   - holding nothing is always safe, so only a PARTIAL set is timed: if it gets no new
   *     token for `stallMs` (x 0.5-1.5 jitter), give every token of the set back, pause for a
   *     random back-off, and start over;
   *   - stall time and back-off double with every attempt (back-off capped at maxBackoffMs):
   *     the jitter breaks the symmetry between equal competitors, and the longer stall lets a
   *     client that keeps losing hold on longer, so it is not starved by single-token clients.
   * Two clients each asking for more than half of the pool therefore both finish, one after
   * the other. Asking for more than the pool will ever hold never completes: pass a signal.
   */
  acquireMany(n: number, options: AcquireManyOptions = {}): Promise<Token[]> {
    const { signal, stallMs = 200, maxBackoffMs = 5000, random = Math.random } = options
    if (!Number.isInteger(n) || n < 1) {
      return Promise.reject(new JobserverError('ERR_JOBSERVER_INVALID_ARG', `acquireMany(n): n must be an integer >= 1, got ${n}`))
    }
    const impossible = this.#cannotEverHold(n)
    if (impossible) return Promise.reject(new JobserverError('ERR_JOBSERVER_INVALID_ARG', impossible))
    return new Promise<Token[]>((resolve, reject) => {
      if (signal?.aborted) return reject(abortError(signal))
      let got: Token[] = []
      let cancels: Array<() => void> = []
      let timer: NodeJS.Timeout | undefined
      let attempt = 0
      let done = false
      const jitter = () => 0.5 + random()
      const cancelRound = () => {
        const cs = cancels
        cancels = []
        for (const c of cs) c()
        clearTimeout(timer)
        timer = undefined
      }
      const giveBack = () => {
        const gs = got
        got = []
        for (const t of gs) t.release()
      }
      const finish = (error?: unknown) => {
        if (done) return
        done = true
        signal?.removeEventListener('abort', onAbort)
        cancelRound()
        if (error === undefined) return resolve(got)
        try {
          giveBack()
        } finally {
          reject(error)
        }
      }
      const onAbort = () => finish(abortError(signal!))
      const onToken = (token: Token) => {
        if (done) {
          token.release()
          return
        }
        got.push(token)
        if (got.length === n) return finish()
        clearTimeout(timer)
        timer = setTimeout(onStall, stallMs * 2 ** Math.min(attempt, 6) * jitter())
      }
      const onStall = () => {
        cancelRound()
        try {
          giveBack()
        } catch (e) {
          return finish(e)
        }
        attempt++
        const pause = Math.min(maxBackoffMs, stallMs * 2 ** Math.min(attempt, 16)) * jitter()
        timer = setTimeout(startRound, pause)
      }
      const startRound = () => {
        timer = undefined
        for (let k = 0; k < n && !done; k++) {
          const cancel = this.#enqueue({ settle: onToken, fail: (e) => finish(e) })
          if (!done) cancels.push(cancel)
        }
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      startRound()
    })
  }

  /** Give back every held token. Returns how many went back; throws the first write error. */
  releaseAll(): number {
    let count = 0
    let firstError: unknown
    for (const t of [...this.#held]) {
      try {
        if (t.release()) count++
      } catch (e) {
        firstError ??= e
      }
    }
    if (firstError !== undefined) throw firstError
    return count
  }

  /**
   * Give back every held token, fail pending calls with ERR_JOBSERVER_CLOSED, stop polling and
   * close the fds. Idempotent.
   */
  close(): void {
    if (this.#closed) return
    this.#failAll(new JobserverError('ERR_JOBSERVER_CLOSED', 'the jobserver client was closed'))
    this.#closed = true
    try {
      this.releaseAll()
    } finally {
      this.#poller?.close()
      this.#poller = undefined
      closeJobserver(this.#opened)
      exitHooks.unregister(this)
    }
  }

  /** @internal Used by the exit hooks. */
  releaseAllQuietly(): void {
    try {
      this.releaseAll()
    } catch {
      // At exit there is no one left to tell.
    }
  }

  /** @internal Used by the exit hooks. */
  closeQuietly(): void {
    try {
      this.close()
    } catch {
      // At exit there is no one left to tell.
    }
  }

  // Queue a waiter (or serve it at once from the implicit slot). Returns its cancel function,
  // which takes it out of the queue if it is still there.
  #enqueue(waiter: Waiter): () => void {
    if (this.#closed) {
      waiter.fail(new JobserverError('ERR_JOBSERVER_CLOSED', 'the jobserver client is closed'))
      return () => {}
    }
    if (this.#implicitFree && this.#waiters.length === 0) {
      waiter.settle(this.#takeImplicit())
      return () => {}
    }
    this.#waiters.push(waiter)
    this.#updatePolling()
    return () => {
      const i = this.#waiters.indexOf(waiter)
      if (i < 0) return
      this.#waiters.splice(i, 1)
      const wasPolling = this.#polling
      this.#updatePolling()
      if (wasPolling && !this.#polling) this.#forgetServerPoll()
    }
  }

  // Withdraw our poll from a server that keeps it after we stop polling: open the file again
  // (first, so this process never has zero files open, which steved reads as "gone" for
  // callers outside its pid namespace) and close the one that was polled. The release of
  // that open file drops its queued poll and any token reserved for it.
  #forgetServerPoll(): void {
    if (!this.#serverKeepsPolls || this.#closed) return
    let fresh: number
    try {
      fresh = fs.openSync(this.#opened.path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
    } catch {
      // Cannot reopen (the path went away): keep the old file; the server's reservation
      // expiry still bounds what the stale poll costs others.
      return
    }
    const old = this.#opened.readFd
    this.#poller?.close()
    this.#poller = undefined
    this.#opened.readFd = fresh
    this.#opened.writeFd = fresh
    try {
      fs.closeSync(old)
    } catch {
      // Gone either way on Linux.
    }
  }

  // Why `n` tokens can never be held at once, when the jobserver is steved and says so;
  // undefined when they can, or when nothing can be known (a FIFO, make, another server).
  #cannotEverHold(n: number): string | undefined {
    const explicit = n - (this.#implicitSlot ? 1 : 0)
    if (explicit <= 1 || !this.#serverKeepsPolls) return undefined
    const get = (key: number): number | null | undefined => {
      const buf = Buffer.alloc(16)
      buf.writeUInt32LE(key, 0)
      const r = this.#native.ioctl(this.#opened.readFd, STEVED_IOC_GET, buf)
      if (r < 0 || buf.readUInt32LE(0) !== key) return undefined
      return buf.readUInt32LE(4) & STEVED_FLAG_NONE ? null : buf.readDoubleLE(8)
    }
    const jobs = get(STEVED_KEY_JOBS)
    if (typeof jobs !== 'number') return undefined
    const perProcess = get(STEVED_KEY_PER_PROCESS_LIMIT)
    const slot = this.#implicitSlot ? ' besides the implicit slot' : ''
    if (explicit > jobs) {
      return `cannot hold ${n} tokens at once: steved at ${this.#opened.path} has ${jobs} in all (its jobs setting)${slot}; ask for at most ${jobs + n - explicit}`
    }
    if (typeof perProcess === 'number' && explicit > perProcess) {
      return `cannot hold ${n} tokens at once: steved at ${this.#opened.path} lets one process hold at most ${perProcess} (its per-process-limit)${slot}; ask for at most ${perProcess + n - explicit}`
    }
    return undefined
  }

  #onPoll(status: number): void {
    if (this.#closed) return
    if (status < 0) {
      // libuv reports POLLERR as EBADF, which names nothing; a read tells the real cause (a dead
      // FUSE mount: ENOTCONN), and in the unlikely case it yields a token, the wait is served.
      const r = this.#native.read(this.#opened.readFd, this.#buf)
      if (r === 1) {
        this.#waiters.shift()!.settle(this.#newToken('explicit', this.#buf[0]))
        return this.#updatePolling()
      }
      const real = r < 0 && r !== -EAGAIN && r !== -EINTR
      return this.#failAll(real ? systemError(r, 'read', this.#opened.path) : systemError(status, 'poll', this.#opened.path))
    }
    // Read at once, one byte per waiter, on the fd that was polled: a server that reserved a
    // token for this poller hands it over on exactly this read.
    while (this.#waiters.length > 0) {
      const r = this.#native.read(this.#opened.readFd, this.#buf)
      if (r === 1) {
        const token = this.#newToken('explicit', this.#buf[0])
        this.#waiters.shift()!.settle(token)
        continue
      }
      if (r === -EAGAIN || r === -EINTR) break // sniped, or interrupted: poll again
      return this.#failAll(r === 0 ? this.#eofError() : systemError(r, 'read', this.#opened.path))
    }
    this.#updatePolling()
  }

  // Poll exactly while someone waits.
  #updatePolling(): void {
    const want = this.#waiters.length > 0
    if (want === this.#polling) return
    if (want) {
      this.#poller ??= new this.#native.Poller(this.#opened.readFd, (status) => this.#onPoll(status))
      const r = this.#poller.start()
      if (r < 0) return this.#failAll(systemError(r, 'poll', this.#opened.path))
      this.#polling = true
    } else {
      this.#poller?.stop()
      this.#polling = false
    }
  }

  #failAll(error: unknown): void {
    const ws = this.#waiters.splice(0)
    this.#updatePolling()
    for (const w of ws) w.fail(error)
  }

  #takeImplicit(): Token {
    this.#implicitFree = false
    return this.#newToken('implicit', undefined)
  }

  #newToken(kind: 'implicit' | 'explicit', byte: number | undefined): Token {
    const token = new TokenImpl(this.#nextId++, kind, byte, (t) => this.#giveBack(t))
    this.#held.add(token)
    return token as unknown as Token
  }

  #giveBack(token: TokenImpl): void {
    this.#held.delete(token)
    if (token.kind === 'implicit') {
      this.#implicitFree = true
      const next = this.#waiters.shift()
      if (next) {
        next.settle(this.#takeImplicit())
        this.#updatePolling()
      }
      return
    }
    const out = Buffer.of(token.byte!)
    for (;;) {
      const r = this.#native.write(this.#opened.writeFd, out)
      if (r === 1) return
      if (r === -EINTR) continue
      // EAGAIN here means a full pipe (64 KiB of tokens): nothing sane to wait for.
      throw systemError(r < 0 ? r : -EAGAIN, 'write', this.#opened.path)
    }
  }

  #eofError(): JobserverError {
    return new JobserverError(
      'ERR_JOBSERVER_EOF',
      `the jobserver at ${this.#opened.path} returned end of file: its server is gone or broken`,
    )
  }

  #assertOpen(): void {
    if (this.#closed) throw new JobserverError('ERR_JOBSERVER_CLOSED', 'the jobserver client is closed')
  }
}

/** Run `fn` while holding one token of `client`; see {@link JobClient.withToken}. */
export function withToken<T>(
  client: JobClient,
  fn: (token: Token) => T | Promise<T>,
  options?: AcquireOptions,
): Promise<T> {
  return client.withToken(fn, options)
}

function isFifoFd(fd: number): boolean {
  try {
    return fs.fstatSync(fd).isFIFO()
  } catch {
    return true
  }
}

function pathExists(path: string): boolean {
  try {
    fs.statSync(path)
    return true
  } catch {
    return false
  }
}
