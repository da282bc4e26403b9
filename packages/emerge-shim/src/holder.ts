// The holder: one small process per package job that holds the job's jobserver tokens from
// its first phase to its end. Portage runs every phase as a new bash process, so something
// outside the phases must hold the token; steved accounts tokens to the process that read
// them, so while this process lives the job holds its tokens, and if it dies (SIGKILL, OOM,
// FEATURES=cgroup killing a phase's leftovers) steved takes them back at once.
//
// It gives the tokens back when the job ends:
//   - success: the post-install checks (misc-functions.sh install_qa_check) send `end`;
//   - failure: a die hook (in the failing phase, or in misc-functions.sh die_hooks) sends `end`;
//   - emerge goes away: the process that ran the phases (see tree.ts supervisorOf) is gone;
// and in each case only once the build's processes are gone (tree.ts): a killed emerge leaves
// its build running for a while, and those processes still run jobs.
//
// It is started detached (its own session, stdio to ${T}/steved-jobserver.log) by the first
// phase, so emerge's log pipe is not held open and a Ctrl-C in emerge's terminal does not
// reach it. See protocol.ts for its socket.
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as readline from 'node:readline'
import { errnoName, type JobClient, type Token } from 'jobclient'
import { describeError } from './errors'
import { describeJobserver, waitReason } from './messages'
import type { ProcFs } from './procfs'
import { encode, parseRequest, SOCKET_NAME, type HolderState, type Reply, type Request } from './protocol'
import type { StevedControl, StevedStatus } from './steved-control'
import { isAlive, remaining, snapshotJob, supervisorOf, tableOf, type ProcRef } from './tree'

export interface HolderOptions {
  /** PORTAGE_BUILDDIR: the socket lives here, and build processes carry it in their environment. */
  builddir: string
  /** CATEGORY/PF */
  pkg: string
  /** The phase that starts the holder. */
  firstPhase: string
  /** Tokens to hold (>= 1). */
  tokens: number
  /** steved group to join as one of its roots, with its cap; null: none. */
  group: { name: string; limit: number } | null
  /** How often the build's processes are looked at while the holder waits for them to go. Default 100 ms. */
  treePollMs?: number
  /** How often emerge is checked. Default 250 ms. */
  supervisorPollMs?: number
  /** How often the reason of a wait is refreshed. Default 2 s. */
  waitPollMs?: number
  /** Give up when no phase attaches within this long after start (the starter died). Default 60 s. */
  firstAttachMs?: number
}

export interface HolderDeps {
  client: JobClient
  proc: ProcFs
  /** steved's control plane on the jobserver path, or null when it cannot be opened. */
  control: () => StevedControl | null
  log: (msg: string) => void
  pid: number
  now: () => number
  /** Called once, when the tokens are back and the socket is gone. */
  onDone: (status: number) => void
}

type Waiting = (r: Reply) => void

export class Holder {
  readonly #o: Required<HolderOptions>
  readonly #d: HolderDeps
  readonly #socketPath: string
  readonly #marker: string
  #server: net.Server | null = null
  #tokens: Token[] = []
  #heldSince: number | null = null
  #acquire = new AbortController()
  #waitText: string | null = null
  #serverText: string
  readonly #waiting = new Set<Waiting>()
  readonly #roots: ProcRef[] = []
  readonly #sessions = new Set<number>()
  readonly #phases: string[] = []
  #supervisor: (ProcRef & { comm: string }) | null = null
  #ending: { reason: string; members: ProcRef[] } | null = null
  #done = false
  readonly #timers: NodeJS.Timeout[] = []

  constructor(options: HolderOptions, deps: HolderDeps) {
    this.#o = { treePollMs: 100, supervisorPollMs: 250, waitPollMs: 2000, firstAttachMs: 60_000, ...options }
    this.#d = deps
    this.#socketPath = `${options.builddir}/${SOCKET_NAME}`
    this.#marker = `PORTAGE_BUILDDIR=${options.builddir}`
    this.#serverText = describeJobserver(null, deps.client.path)
  }

  get state(): HolderState {
    return {
      holderPid: this.#d.pid,
      pkg: this.#o.pkg,
      tokens: this.#tokens.length,
      wanted: this.#o.tokens,
      heldForSeconds: this.#heldSince === null ? null : Math.round((this.#d.now() - this.#heldSince) / 100) / 10,
      firstPhase: this.#o.firstPhase,
      phases: [...this.#phases],
      jobserver: this.#serverText,
      group: this.#o.group,
      supervisor: this.#supervisor ? { pid: this.#supervisor.pid, comm: this.#supervisor.comm } : null,
      ending: this.#ending?.reason ?? null,
    }
  }

  /**
   * Listen on the socket (relative to the build directory, so a long PORTAGE_TMPDIR cannot
   * overflow sun_path), then start taking the tokens. Resolves once clients can connect;
   * rejects with EADDRINUSE when another holder serves this build directory.
   */
  async listen(): Promise<void> {
    const server = net.createServer((sock) => this.#onConnection(sock))
    const cwd = process.cwd()
    process.chdir(this.#o.builddir)
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(SOCKET_NAME, () => {
          server.removeListener('error', reject)
          resolve()
        })
      })
    } finally {
      process.chdir(cwd)
    }
    fs.chmodSync(this.#socketPath, 0o666)
    this.#server = server
    this.#d.log(`listening on ${this.#socketPath}; taking ${this.#o.tokens} token(s) from ${this.#d.client.path}`)
    this.#every(this.#o.supervisorPollMs, () => this.#checkSupervisor())
    const first = setTimeout(() => {
      if (this.#phases.length === 0) this.#startEnding('no phase attached after start')
    }, this.#o.firstAttachMs)
    this.#timers.push(first)
    void this.#takeTokens()
  }

  #every(ms: number, fn: () => void): void {
    this.#timers.push(setInterval(fn, ms))
  }

  #status(): StevedStatus | null {
    const c = this.#d.control()
    if (!c) return null
    try {
      return c.status()
    } catch {
      return null
    } finally {
      c.close()
    }
  }

  async #takeTokens(): Promise<void> {
    const first = this.#status()
    this.#serverText = describeJobserver(first, this.#d.client.path)
    const refresh = setInterval(() => this.#setWaitText(waitReason(this.#status(), this.#d.pid, this.#d.client.path)), this.#o.waitPollMs)
    try {
      const signal = this.#acquire.signal
      const n = this.#o.tokens
      this.#tokens = n === 1 ? [await this.#d.client.acquire({ signal })] : await this.#d.client.acquireMany(n, { signal })
    } catch (e) {
      if (this.#ending) return // aborted: the job ended while waiting
      this.#d.log(`cannot take tokens: ${describeError(e)}`)
      this.#answerWaiting({ type: 'error', code: (e as { code?: string }).code ?? 'ERR_UNKNOWN', message: `cannot take a token: ${describeError(e)}` })
      this.#startEnding('the jobserver failed')
      return
    } finally {
      clearInterval(refresh)
    }
    this.#heldSince = this.#d.now()
    if (this.#ending) {
      // The end came while the read was already answered: give them straight back.
      this.#releaseAll()
      return
    }
    this.#d.log(`holding ${this.#tokens.length} token(s)`)
    if (this.#o.group) {
      // Join after taking the tokens, so the holder's own tokens never wait on the cap. As
      // 'caller': under FEATURES=pid-sandbox this process runs in the phase's pid namespace,
      // where its own pid (this.#d.pid) names another process to steved.
      const c = this.#d.control()
      const r = c ? c.groupJoin(this.#o.group.name, 'caller', this.#o.group.limit) : -1
      c?.close()
      this.#d.log(r === 0 ? `joined steved group ${this.#o.group.name} (limit ${this.#o.group.limit})` : `could not join group ${this.#o.group.name}: ${r}`)
    }
    this.#answerWaiting({ type: 'holding', ...this.state })
  }

  #setWaitText(text: string): void {
    if (text === this.#waitText) return
    this.#waitText = text
    this.#d.log(`waiting: ${text}`)
    for (const w of this.#waiting) w({ type: 'wait', text })
  }

  #answerWaiting(r: Reply): void {
    const ws = [...this.#waiting]
    this.#waiting.clear()
    for (const w of ws) w(r)
  }

  #onConnection(sock: net.Socket): void {
    sock.on('error', () => sock.destroy())
    const rl = readline.createInterface({ input: sock, crlfDelay: Infinity })
    let answered = false
    rl.once('line', (line) => {
      answered = true
      rl.close()
      const send = (r: Reply, last: boolean) => {
        if (sock.destroyed) return
        if (last) sock.end(encode(r))
        else sock.write(encode(r))
      }
      let req: Request
      try {
        req = parseRequest(line)
      } catch (e) {
        return send({ type: 'error', code: (e as { code: string }).code, message: (e as Error).message }, true)
      }
      this.#handle(req, send, sock)
    })
    sock.once('end', () => {
      if (!answered) sock.end()
    })
  }

  #handle(req: Request, send: (r: Reply, last: boolean) => void, sock: net.Socket): void {
    switch (req.op) {
      case 'status':
        return send({ type: 'status', ...this.state }, true)
      case 'end': {
        this.#d.log(`end (${req.reason}) from pid ${req.pid}`)
        this.#startEnding(req.reason === 'success' ? 'the build succeeded' : 'the build failed')
        return send({ type: 'ending', waitingFor: this.#ending?.members.length ?? 0 }, true)
      }
      case 'join':
        return send(this.#joinFor(req), true)
      case 'attach': {
        if (this.#ending) {
          return send({ type: 'error', code: 'ERR_SHIM_HOLDER_ENDING', message: `the holder is giving its tokens back (${this.#ending.reason})` }, true)
        }
        this.#attach(req)
        if (this.#tokens.length > 0) return send({ type: 'holding', ...this.state }, true)
        const w: Waiting = (r) => send(r, r.type !== 'wait')
        this.#waiting.add(w)
        sock.once('close', () => this.#waiting.delete(w))
        send({ type: 'wait', text: this.#waitText ?? waitReason(this.#status(), this.#d.pid, this.#d.client.path) }, false)
        return
      }
    }
  }

  /**
   * Join a phase's process to the job's group on its behalf: steved refused the phase's own
   * join (EPERM) because the group is another uid's, as under FEATURES=userpriv, where setup
   * (root) and this holder (started by setup) made it and the later phases run as the portage
   * user. Only for the process named, still the same one (start time), and only if it was
   * started with this job's PORTAGE_BUILDDIR in its environment: whoever can reach the socket
   * must not get a root holder to cap processes of other builds or users.
   *
   * The pid is checked in this holder's /proc and passed to steved as it is: the same process
   * only when the holder shares steved's pid namespace. Under FEATURES=pid-sandbox it does not
   * (every phase, and the holder it starts, runs in a namespace of its own, and that namespace
   * ends with the phase), but there the request cannot come: a holder that outlives a phase
   * does not exist, so the phase asking is the one that started this holder, as the same uid,
   * and steved would refuse the holder whatever it refused the phase. Should it come anyway,
   * it is refused rather than capping whichever process steved knows by that pid.
   */
  #joinFor(req: { pid: number; start: number; phase: string }): Reply {
    const refuse = (why: string): Reply => {
      this.#d.log(`phase ${req.phase}: not joining pid ${req.pid} to a group: ${why}`)
      return { type: 'error', code: 'ERR_SHIM_JOIN_REFUSED', message: why }
    }
    const group = this.#o.group
    if (!group) return refuse(`the holder of ${this.#o.pkg} caps no group (it was started without JOBSERVER_MAX_JOBS)`)
    if (this.#ending) return refuse(`the holder is giving its tokens back (${this.#ending.reason})`)
    // Portage's pid namespace init is `python3 …/bin/pid-ns-init …` (its comm is python's).
    if (this.#d.proc.cmdline(1)?.some((a) => a.endsWith('/pid-ns-init'))) return refuse(`the holder runs in a phase's pid namespace (FEATURES=pid-sandbox), where pid ${req.pid} is not the process steved knows by that number`)
    const p = this.#d.proc.stat(req.pid)
    if (!p || p.start !== req.start) return refuse(`pid ${req.pid} is gone`)
    if (!this.#d.proc.environHas(req.pid, this.#marker)) return refuse(`pid ${req.pid} is not a process of this build (no ${this.#marker} in its environment)`)
    const c = this.#d.control()
    if (!c) return refuse(`cannot open ${this.#d.client.path}`)
    let r: number
    try {
      r = c.groupJoin(group.name, req.pid, group.limit)
    } finally {
      c.close()
    }
    if (r !== 0) return refuse(`steved refused the holder (pid ${this.#d.pid}) too (${errnoName(r)})`)
    this.#d.log(`phase ${req.phase}: joined pid ${req.pid} (uid ${this.#d.proc.uid(req.pid) ?? '?'}) to group ${group.name} on its behalf (limit ${group.limit})`)
    return { type: 'joined', group: group.name, limit: group.limit }
  }

  #attach(req: { pid: number; start: number; phase: string }): void {
    const table = tableOf(this.#d.proc.list())
    const root = table.get(req.pid)
    this.#phases.push(req.phase)
    if (!root || root.start !== req.start) {
      this.#d.log(`phase ${req.phase}: pid ${req.pid} is already gone`)
      return
    }
    this.#roots.push({ pid: root.pid, start: root.start })
    this.#sessions.add(root.sid)
    const sup = supervisorOf(table, root.pid)
    if (sup && (this.#supervisor?.pid !== sup.pid || this.#supervisor.start !== sup.start)) {
      this.#supervisor = { pid: sup.pid, start: sup.start, comm: sup.comm }
      this.#d.log(`watching pid ${sup.pid} (${sup.comm}) as the process that runs the phases`)
    }
    this.#d.log(`phase ${req.phase}: pid ${req.pid} attached`)
  }

  #checkSupervisor(): void {
    if (this.#ending || !this.#supervisor) return
    const p = this.#d.proc.stat(this.#supervisor.pid)
    if (p && isAlive(new Map([[p.pid, p]]), this.#supervisor)) return
    this.#startEnding(`pid ${this.#supervisor.pid} (${this.#supervisor.comm}), which ran the phases, is gone`)
  }

  /** Stop taking phases, snapshot the build's processes, and give the tokens back once they are gone. */
  #startEnding(reason: string): void {
    if (this.#ending || this.#done) return
    const table = tableOf(this.#d.proc.list())
    const exclude = new Set([this.#d.pid])
    const members = snapshotJob(table, {
      roots: this.#roots,
      sessions: this.#sessions,
      marked: (p) => this.#d.proc.environHas(p.pid, this.#marker),
      exclude,
    })
    this.#ending = { reason, members }
    this.#d.log(`ending: ${reason}; waiting for ${members.length} process(es) of the build: ${members.map((m) => m.pid).join(' ')}`)
    this.#acquire.abort()
    this.#answerWaiting({ type: 'error', code: 'ERR_SHIM_HOLDER_ENDING', message: `the holder is giving its tokens back (${reason})` })
    this.#closeServer()
    const poll = () => {
      const left = remaining(tableOf(this.#d.proc.list()), this.#ending!.members, this.#sessions, exclude)
      if (left.length > 0) {
        if (left.length !== this.#ending!.members.length) this.#d.log(`still waiting for ${left.length}: ${left.map((m) => m.pid).join(' ')}`)
        this.#ending!.members = left
        return
      }
      this.#finish()
    }
    this.#every(this.#o.treePollMs, poll)
    poll()
  }

  #closeServer(): void {
    const s = this.#server
    if (!s) return
    this.#server = null
    // New phases must start a fresh holder: take the name away now, not when the last
    // connection (an `end` request being answered) closes.
    try {
      fs.unlinkSync(this.#socketPath)
    } catch {
      // Already gone (the build directory was cleaned).
    }
    s.close()
  }

  #releaseAll(): number {
    const n = this.#tokens.length
    this.#tokens = []
    try {
      this.#d.client.close()
    } catch (e) {
      this.#d.log(`giving tokens back failed: ${describeError(e)}`)
    }
    return n
  }

  #finish(): void {
    if (this.#done) return
    this.#done = true
    for (const t of this.#timers) clearInterval(t)
    this.#closeServer()
    const n = this.#releaseAll()
    this.#d.log(`gave ${n} token(s) back (${this.#ending?.reason ?? 'closed'})`)
    this.#d.onDone(0)
  }
}
