// `jobclient fifo [--tokens-ahead K] -- CMD ARGS...`: run a strict client (released ninja
// 1.13.x, cc-rs, gnumake-tokenpool, LLVM before 22) on steved's pool through a private named
// pipe.
//
// Those clients accept `--jobserver-auth=fifo:PATH` only when PATH is a real FIFO (S_ISFIFO);
// steved's FUSE file and CUSE device are not, and a kernel FIFO cannot be served by FUSE or
// CUSE. So this process (the bridge) makes a FIFO of its own in a private directory, names it
// in the child's MAKEFLAGS, and feeds it from steved: every byte it writes into the pipe is a
// token it read from steved with the library's poll-then-read acquisition. steved accounts all
// of them to the bridge, which is the process it watches: if the bridge dies, steved takes
// them back, and the child dies with it (parent-death signal, see spawnChild).
//
// The bridge cannot see a failed read: ninja 1.13 tries one non-blocking read only when one of
// its own jobs ends, and a read of an empty pipe leaves no trace. Demand is therefore offered,
// not observed: the bridge keeps K bytes ("tokens ahead") sitting in the pipe. Each byte the
// child takes is replaced from steved; bytes the child writes back beyond K are read back and
// returned to steved. The sizes come from FIONREAD on the pipe, sampled every few ms, so:
//   held from steved (H) = bytes in the pipe (n) + tokens the child's jobs hold (H - n).
// K = 0 offers nothing (the child runs on its implicit slot alone); every byte of K is a token
// nobody else can use while the child does not want it. bench/ninja measures the trade-off;
// the default is DEFAULT_TOKENS_AHEAD (packages/jobclient/README.md).
//
// The child's implicit slot is not paid for, exactly as a top-level make's is not: run from a
// shell, the build takes tokens + 1 slot; run inside a make recipe, the recipe's slot (which
// make paid for) is that implicit slot.
import { spawnSync, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import * as util from 'node:util'
import type { JobClient, Token } from './client'
import { makeflagsForChild, MAKEFLAGS_VARIABLES, type JobserverAuth } from './makeflags'
import { FIONREAD, loadNative } from './native'
import { childStatus, describeError, jobsFlagWarning, openForCli, type RunIo } from './run'

const debug = util.debuglog('jobclient')

/** Bytes kept in the pipe when --tokens-ahead is not given (chosen from bench/ninja). */
export const DEFAULT_TOKENS_AHEAD = 2
/** How often the pipe is sampled, in ms. */
export const DEFAULT_TICK_MS = 5

/** Options of {@link runFifoBridge}, as parsed from the command line. */
export interface FifoOptions {
  /** Bytes kept in the pipe for the child to take (K). */
  tokensAhead: number
  /** Use this jobserver path instead of the environment. */
  jobserver?: string
  /** Sampling period of the pipe, ms. */
  tickMs?: number
  /** Write figures of the run (JSON) to this file when the child has exited. */
  statsFile?: string
  /** No jobserver to be had: warn and run the command as it is, instead of failing. */
  optional?: boolean
}

/** What the bridge measured; written by --stats for bench/ninja. */
export interface FifoStats {
  tokensAhead: number
  tickMs: number
  wallMs: number
  /** Tokens read from steved, and given back (equal at the end). */
  acquired: number
  returned: number
  /** Integral of bytes idle in the pipe over time, token*ms; divided by wallMs: the mean. */
  idleTokenMs: number
  /** Integral of tokens the child's jobs held (H - n), token*ms. */
  busyTokenMs: number
  maxHeld: number
  maxBusy: number
  /** Bytes read back that no token of ours stood for (the child wrote more than it read). */
  strayBytes: number
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']

/**
 * Run `argv` with a private FIFO jobserver fed from the pool; resolve with the exit status to
 * use (the child's, 128+N for a signal, 126/127 when it cannot be run, 1 for jobserver errors).
 */
export async function runFifoBridge(argv: readonly string[], options: FifoOptions, io: RunIo): Promise<number> {
  const K = options.tokensAhead
  const tickMs = options.tickMs ?? DEFAULT_TICK_MS
  const resolved = resolveCommand(argv[0], io.env)
  if (typeof resolved === 'number') {
    io.stderr.write(`jobclient: error: cannot run ${argv[0]}: ${resolved === 127 ? 'command not found' : 'permission denied'}\n`)
    return resolved
  }
  let client: JobClient
  try {
    client = openForCli(io.env, options.jobserver, false, false)
  } catch (e) {
    if (!options.optional) {
      io.stderr.write(`jobclient: error: ${describeError(e)}\n`)
      return 1
    }
    io.stderr.write(`jobclient: warning: running ${argv[0]} outside any pool: ${describeError(e)}\n`)
    return runPlain(resolved, argv, io)
  }
  const warn = jobsFlagWarning(argv)
  if (warn) io.stderr.write(`${warn}\n`)

  // The private pipe: mkdtemp makes the directory 0700, so only this user reaches the FIFO.
  let dir: string | undefined
  let fd = -1
  try {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jobclient-fifo-'))
    const fifo = path.join(dir, 'jobserver')
    // Clients cut the auth value at the first space (jobserver-rs, cc-rs, GCC).
    if (/\s/.test(fifo)) throw new Error(`the pipe path '${fifo}' contains white space; set TMPDIR to a path without any`)
    mkfifo(fifo)
    // O_RDWR: never blocks on a FIFO, and keeps a writer open so that the child's reads of an
    // empty pipe get EAGAIN, not end of file.
    fd = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
    return await bridge(argv, resolved, K, tickMs, options.statsFile, client, fd, fifo, io)
  } catch (e) {
    io.stderr.write(`jobclient: error: ${describeError(e)}\n`)
    return 1
  } finally {
    if (fd >= 0) fs.closeSync(fd)
    if (dir) fs.rmSync(dir, { recursive: true, force: true })
    try {
      client.close()
    } catch (e) {
      io.stderr.write(`jobclient: error: giving tokens back: ${describeError(e)}\n`)
    }
  }
}

async function bridge(
  argv: readonly string[],
  command: string,
  K: number,
  tickMs: number,
  statsFile: string | undefined,
  client: JobClient,
  fd: number,
  fifo: string,
  io: RunIo,
): Promise<number> {
  const native = loadNative()
  const one = Buffer.alloc(1)
  const count = Buffer.alloc(4)
  // Tokens from steved whose bytes went into the pipe (in the pipe or with the child's jobs).
  const held: Token[] = []
  // Acquires under way, each abortable.
  const pending = new Set<AbortController>()
  let stopping = false
  let failed: unknown
  const stats: FifoStats = {
    tokensAhead: K,
    tickMs,
    wallMs: 0,
    acquired: 0,
    returned: 0,
    idleTokenMs: 0,
    busyTokenMs: 0,
    maxHeld: 0,
    maxBusy: 0,
    strayBytes: 0,
  }

  const inPipe = (): number => {
    const r = native.ioctl(fd, FIONREAD, count)
    return r < 0 ? 0 : count.readInt32LE(0)
  }
  const giveBack = (t: Token) => {
    t.release()
    stats.returned++
  }
  const request = (n: number) => {
    for (let i = 0; i < n; i++) {
      const ac = new AbortController()
      pending.add(ac)
      client.acquire({ signal: ac.signal }).then(
        (token) => {
          pending.delete(ac)
          stats.acquired++
          // Not needed any more (the child gave bytes back meanwhile, or it is over).
          if (stopping || inPipe() >= K) return giveBack(token)
          one[0] = token.kind === 'explicit' ? token.byte : 0x2b
          if (native.write(fd, one) !== 1) return giveBack(token)
          held.push(token)
          stats.maxHeld = Math.max(stats.maxHeld, held.length)
        },
        (e: unknown) => {
          pending.delete(ac)
          if (ac.signal.aborted || stopping) return
          // steved went away or broke: stop feeding; the child goes on with what it has.
          if (failed === undefined) {
            failed = e
            io.stderr.write(`jobclient: warning: no more tokens for ${argv[0]}: ${describeError(e)}\n`)
          }
        },
      )
    }
  }
  // Read `n` idle bytes back out of the pipe and return their tokens to steved.
  const trim = (n: number) => {
    for (let i = 0; i < n; i++) {
      if (native.read(fd, one) !== 1) return
      const t = held.pop()
      if (t) giveBack(t)
      else stats.strayBytes++
    }
  }

  let prev = 0
  let last = Date.now()
  const started = last
  const tick = () => {
    const now = Date.now()
    let n = inPipe()
    const dt = now - last
    last = now
    stats.idleTokenMs += Math.min(n, held.length) * dt
    const busy = Math.max(0, held.length - n)
    stats.busyTokenMs += busy * dt
    stats.maxBusy = Math.max(stats.maxBusy, busy)
    if (n > K && prev > K) {
      // Over K on two samples in a row: idle, not a job's byte on its way back and out again
      // (ninja writes its byte back and reads again within microseconds).
      trim(Math.min(n, prev) - K)
      n = inPipe()
    } else if (n >= K) {
      for (const ac of pending) ac.abort()
    } else if (!stopping && failed === undefined && n + pending.size < K) {
      request(K - n - pending.size)
    }
    prev = n
  }

  const env: NodeJS.ProcessEnv = { ...io.env }
  const auth: JobserverAuth = { style: 'fifo', path: fifo }
  env.MAKEFLAGS = makeflagsForChild(io.env.MAKEFLAGS, auth)
  for (const v of MAKEFLAGS_VARIABLES) {
    if (v !== 'MAKEFLAGS' && io.env[v] !== undefined) env[v] = makeflagsForChild(io.env[v], auth)
  }
  debug('feeding %s from %s, %d token(s) ahead', fifo, client.path, K)
  // Offer the first bytes before the child starts: ninja's first loop reads as long as it can.
  if (K > 0) request(K)

  let child: ChildProcess | undefined
  const onSignal = (signal: NodeJS.Signals) => {
    // Forward and keep feeding: the child decides when it is over; its jobs still run.
    child?.kill(signal)
  }
  for (const s of SIGNALS) io.signals.on(s, onSignal)
  const timer = setInterval(tick, tickMs)
  try {
    const [file, args] = spawnArgs(command, argv)
    return await childStatus(argv[0], file, args, { env, stdio: 'inherit' }, io, (c) => {
      child = c
    })
  } finally {
    // The child is gone: every token comes back, whatever it left in the pipe or took with it.
    stopping = true
    clearInterval(timer)
    for (const s of SIGNALS) io.signals.removeListener(s, onSignal)
    for (const ac of pending) ac.abort()
    tick()
    while (native.read(fd, one) === 1) {
      /* drain */
    }
    for (const t of held.splice(0)) giveBack(t)
    stats.wallMs = Date.now() - started
    if (statsFile) fs.writeFileSync(statsFile, `${JSON.stringify(stats, null, 2)}\n`)
  }
}

// --optional without a jobserver: the command as it is, signals forwarded, status passed on.
function runPlain(command: string, argv: readonly string[], io: RunIo): Promise<number> {
  let child: ChildProcess | undefined
  const onSignal = (signal: NodeJS.Signals) => child?.kill(signal)
  for (const s of SIGNALS) io.signals.on(s, onSignal)
  return childStatus(argv[0], command, argv.slice(1), { env: io.env, stdio: 'inherit' }, io, (c) => {
    child = c
  }).finally(() => {
    for (const s of SIGNALS) io.signals.removeListener(s, onSignal)
  })
}

/** Make the named pipe (Node has no mkfifo; coreutils' does one syscall). */
function mkfifo(p: string): void {
  const r = spawnSync('mkfifo', ['-m', '0600', p], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] })
  if (r.error || r.status !== 0) throw new Error(`cannot make the pipe ${p}: ${(r.stderr || String(r.error)).trim()}`)
}

/**
 * The child must not outlive the bridge: steved reclaims the bridge's tokens when it dies, and
 * a child still running on bytes it holds would then run jobs nobody pays for. util-linux's
 * setpriv sets PR_SET_PDEATHSIG (SIGKILL) and execs the command, so the kernel kills the child
 * however the bridge dies, SIGKILL included. Without setpriv the child is started directly.
 */
function spawnArgs(command: string, argv: readonly string[]): [string, string[]] {
  for (const dir of ['/usr/bin', '/bin']) {
    const setpriv = path.join(dir, 'setpriv')
    if (fs.existsSync(setpriv)) return [setpriv, ['--pdeathsig', 'KILL', '--', command, ...argv.slice(1)]]
  }
  debug('no setpriv: %s will not be killed if jobclient is', argv[0])
  return [command, [...argv.slice(1)]]
}

/** The executable `cmd` names (searched on PATH), or 127 (not found) / 126 (not executable). */
function resolveCommand(cmd: string, env: NodeJS.ProcessEnv): string | 126 | 127 {
  const candidates = cmd.includes('/') ? [cmd] : (env.PATH ?? '/usr/bin:/bin').split(':').map((d) => path.join(d || '.', cmd))
  let seen = false
  for (const c of candidates) {
    let st: fs.Stats
    try {
      st = fs.statSync(c)
    } catch {
      continue
    }
    if (st.isDirectory()) continue
    seen = true
    try {
      fs.accessSync(c, fs.constants.X_OK)
      return c
    } catch {
      // Keep looking: a later PATH entry may be executable.
    }
  }
  return seen ? 126 : 127
}
