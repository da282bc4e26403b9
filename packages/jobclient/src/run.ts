// `jobclient run [-n N] -- CMD ARGS...`: hold N tokens while CMD runs.
//
// The child gets MAKEFLAGS naming the same jobserver in `fifo:` form and without -j, so a
// make, ninja or cargo inside joins the pool, and the token we hold is its implicit slot: with
// one token, `jobclient run make` runs exactly as many jobs as it could before, but the first
// one is now paid for. Exit status: the child's, 128+N when a signal N killed it, 126/127 when
// it could not be started (as a shell does), 1 for jobserver errors, 2 for usage errors.
import { spawn, spawnSync, type ChildProcess, type SpawnOptions, type StdioOptions } from 'node:child_process'
import * as os from 'node:os'
import * as path from 'node:path'
import * as util from 'node:util'
import { DEFAULT_JOBSERVER_PATHS, JobClient, type Token } from './client'
import { describeError } from './errors'
import { makeflagsForChild, MAKEFLAGS_VARIABLES, type JobserverAuth } from './makeflags'

const debug = util.debuglog('jobclient')

/** Options of {@link runCommand}, as parsed from the command line. */
export interface RunOptions {
  /** Tokens to hold while the command runs (default 1). */
  tokens: number
  /** Use this jobserver path instead of the environment. */
  jobserver?: string
}

/** Where {@link runCommand} talks to; tests and embedders may replace any of it. */
export interface RunIo {
  env: NodeJS.ProcessEnv
  stderr: { write(s: string): unknown }
  /** The process whose SIGINT/SIGTERM/SIGHUP are forwarded to the child. */
  signals: NodeJS.EventEmitter
}

/** Paths tried when the environment names no jobserver: JOBCLIENT_DEFAULT_PATHS (colon list) or steved's. */
export function defaultPaths(env: NodeJS.ProcessEnv): readonly string[] {
  const v = env.JOBCLIENT_DEFAULT_PATHS
  return v !== undefined ? v.split(':').filter((p) => p !== '') : DEFAULT_JOBSERVER_PATHS
}

/** Open the jobserver for the CLI: `--jobserver PATH`, else the environment, else steved's paths. */
export function openForCli(env: NodeJS.ProcessEnv, jobserver: string | undefined, implicitSlot = false, handleSignals = true): JobClient {
  if (jobserver !== undefined) return JobClient.open(jobserver, { implicitSlot, handleSignals })
  return JobClient.fromEnv({ env, fallbackPaths: defaultPaths(env), implicitSlot, handleSignals })
}

export { describeError } from './errors'

const MAKE_NAME = /^g?make(-?\d[\d.]*)?$/
const NINJA_NAME = /^(ninja|samu)$/
// Short options taking an argument: the rest of a cluster after one is that argument.
const MAKE_ARG_LETTERS = new Set(['C', 'f', 'I', 'j', 'l', 'o', 'W', 'E', 'O'])
const NINJA_ARG_LETTERS = new Set(['C', 'f', 'j', 'k', 'l', 'd', 't', 'w'])

/**
 * The warning to print when CMD is make or ninja with -j: an explicit -j makes make start its
 * own jobserver ("-jN forced in submake: resetting jobserver mode") and makes ninja ignore the
 * pool, so the command would not share the pool at all. Pure; undefined when there is nothing
 * to say.
 */
export function jobsFlagWarning(argv: readonly string[]): string | undefined {
  if (argv.length === 0) return undefined
  const name = path.basename(argv[0])
  const tool = MAKE_NAME.test(name) ? 'make' : NINJA_NAME.test(name) ? 'ninja' : undefined
  if (!tool) return undefined
  const letters = tool === 'make' ? MAKE_ARG_LETTERS : NINJA_ARG_LETTERS
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--') break
    if (tool === 'make' && (a === '--jobs' || a.startsWith('--jobs='))) return warning(name, a, tool)
    if (a.startsWith('-') && !a.startsWith('--')) {
      for (const c of a.slice(1)) {
        if (c === 'j') return warning(name, a, tool)
        if (letters.has(c)) {
          // "-C dir": skip the separate argument too, so "-C -j" is not read as -j.
          if (a.endsWith(c) && c !== 'j') i++
          break
        }
      }
    }
  }
  return undefined
}

function warning(name: string, flag: string, tool: 'make' | 'ninja'): string {
  const effect =
    tool === 'make'
      ? 'make then starts its own jobserver ("resetting jobserver mode") and ignores the pool'
      : 'ninja then ignores the jobserver and runs that many jobs on its own'
  return `jobclient: warning: '${name} ${flag}' disables the jobserver: ${effect}; drop ${flag} to share the pool [WARN_JOBSERVER_JOBS_FLAG]`
}

/** The version of a GNU make binary as [major, minor], or undefined if it does not say. */
function makeVersion(cmd: string, env: NodeJS.ProcessEnv): [number, number] | undefined {
  const r = spawnSync(cmd, ['--version'], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 })
  const m = /GNU Make (\d+)\.(\d+)/.exec(r.stdout ?? '')
  return m ? [Number(m[1]), Number(m[2])] : undefined
}

/**
 * Run `argv` under `options.tokens` tokens and resolve with the exit status to use.
 * Never rejects: problems are reported on `io.stderr` and turned into exit statuses.
 */
/**
 * Start `file` and resolve with its exit status as a shell reports it: the child's code, 128 + N
 * when signal N ended it, 127 when the command is not found, 126 when it cannot be run (both with
 * a line on stderr naming `name`). `started` gets the child as soon as it exists.
 */
export function childStatus(
  name: string,
  file: string,
  args: readonly string[],
  options: SpawnOptions,
  io: Pick<RunIo, 'stderr'>,
  started: (child: ChildProcess) => void,
): Promise<number> {
  return new Promise<number>((resolve) => {
    let c: ChildProcess
    try {
      c = spawn(file, args, options)
    } catch (e) {
      io.stderr.write(`jobclient: error: cannot run ${name}: ${describeError(e)}\n`)
      return resolve(126)
    }
    started(c)
    c.on('error', (e: NodeJS.ErrnoException) => {
      // A failed kill() of a running child reports here too; only a spawn failure (no pid)
      // ends the run.
      if (c.pid !== undefined) return
      io.stderr.write(`jobclient: error: cannot run ${name}: ${describeError(e)}\n`)
      resolve(e.code === 'ENOENT' ? 127 : 126)
    })
    c.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 0)))
  })
}

export async function runCommand(argv: readonly string[], options: RunOptions, io: RunIo): Promise<number> {
  let client: JobClient
  try {
    // Signals are ours to handle here (forwarded to the child), not the library's.
    client = openForCli(io.env, options.jobserver, false, false)
  } catch (e) {
    io.stderr.write(`jobclient: error: ${describeError(e)}\n`)
    return 1
  }
  const warn = jobsFlagWarning(argv)
  if (warn) io.stderr.write(`${warn}\n`)

  // A signal while we wait for tokens: stop waiting and exit as if killed by it.
  const abort = new AbortController()
  let child: ReturnType<typeof spawn> | undefined
  let caught: NodeJS.Signals | undefined
  const onSignal = (signal: NodeJS.Signals) => {
    if (child) {
      // Forward, then keep waiting: the tokens go back only when the child is gone, else the
      // child's jobs would run on tokens that someone else now also holds.
      child.kill(signal)
    } else {
      caught = signal
      abort.abort(signal)
    }
  }
  const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']
  for (const s of SIGNALS) io.signals.on(s, onSignal)
  debug('waiting for %d token(s) from %s', options.tokens, client.path)
  try {
    let tokens: Token[]
    try {
      tokens =
        options.tokens === 1
          ? [await client.acquire({ signal: abort.signal })]
          : await client.acquireMany(options.tokens, { signal: abort.signal })
    } catch (e) {
      if (caught) return 128 + os.constants.signals[caught]
      io.stderr.write(`jobclient: error: ${describeError(e)}\n`)
      return 1
    }
    debug('holding %d token(s) from %s', tokens.length, client.path)

    const env: NodeJS.ProcessEnv = { ...io.env }
    let auth: JobserverAuth = client.childAuth
    let stdio: StdioOptions = 'inherit'
    const name = path.basename(argv[0])
    if (MAKE_NAME.test(name)) {
      // make < 4.4 dies on any `fifo:` auth ("invalid --jobserver-auth string"): give it the
      // jobserver as inherited fds 3,4 instead, the only form it knows.
      const v = makeVersion(argv[0], env)
      if (v && (v[0] < 4 || (v[0] === 4 && v[1] < 4))) {
        debug('%s is make %d.%d: passing the jobserver as fds 3,4', argv[0], v[0], v[1])
        auth = { style: 'pipe', read: 3, write: 4 }
        stdio = ['inherit', 'inherit', 'inherit', client.readFd, client.writeFd]
      }
    }
    // Every variable a client might read must agree (jobserver-rs stops at the first one set).
    env.MAKEFLAGS = makeflagsForChild(io.env.MAKEFLAGS, auth)
    for (const v of MAKEFLAGS_VARIABLES) {
      if (v !== 'MAKEFLAGS' && io.env[v] !== undefined) env[v] = makeflagsForChild(io.env[v], auth)
    }

    const status = await childStatus(argv[0], argv[0], argv.slice(1), { env, stdio }, io, (c) => {
      child = c
    })
    return status
  } finally {
    for (const s of SIGNALS) io.signals.removeListener(s, onSignal)
    try {
      client.close()
    } catch (e) {
      io.stderr.write(`jobclient: error: giving tokens back: ${describeError(e)}\n`)
    }
  }
}
