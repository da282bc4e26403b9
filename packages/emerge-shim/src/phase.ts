// The commands the bash module runs: `phase` in every phase the module acts in, `die` from the
// die hook, `status` for people and tests. They speak to the job's holder (holder.ts) over its
// socket and print what the user should see as lines "info TEXT" / "warn TEXT" on stdout,
// which the bash module turns into einfo / ewarn.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as readline from 'node:readline'
import { errnoName, fromEnv, loadNative, type Native } from 'jobclient'
import { describeError, ShimError } from './errors'
import { contextOf, detectPortage, makePlan, parseSettings, type Env, type Plan } from './plan'
import type { ProcFs } from './procfs'
import { encode, parseReply, SOCKET_NAME, type Reply, type Request } from './protocol'
import { StevedControl } from './steved-control'

/** ioctl(2) request: set close-on-exec on an fd (asm-generic/ioctls.h). */
const FIOCLEX = 0x5451

export interface ShimIo {
  env: Env
  /** A line for the user (einfo / ewarn). */
  say: (level: 'info' | 'warn', text: string) => void
  /** Diagnostics for the build log. */
  stderr: (text: string) => void
  proc: ProcFs
  /** How to run this program again: [node, bin/steved-emerge-shim.js]. */
  self: readonly string[]
  /** This process's parent (getppid(2): a pid of this process's own pid namespace). */
  ppid: number
  native?: Native
}

interface Job {
  builddir: string
  pkg: string
  /** T: the holder's log goes there. */
  tmp: string
}

function jobOf(env: Env): Job {
  const missing = ['PORTAGE_BUILDDIR', 'CATEGORY', 'PF'].filter((v) => !env[v])
  if (missing.length > 0) throw new ShimError('ERR_SHIM_NO_PORTAGE_ENV', `${missing.join(', ')} not set: not run by Portage?`)
  return { builddir: env.PORTAGE_BUILDDIR!, pkg: `${env.CATEGORY}/${env.PF}`, tmp: env.T || env.PORTAGE_BUILDDIR! }
}

/** The jobserver path from MAKEFLAGS & co., or null: none configured (the shim is then silent). */
function jobserverPath(env: Env): { path: string } | { unsupported: string } | null {
  let found
  try {
    found = fromEnv(env as NodeJS.ProcessEnv)
  } catch (e) {
    return { unsupported: describeError(e) }
  }
  if (!found?.auth) return null
  if (found.auth.style !== 'fifo') return { unsupported: `${found.source} names pipe fds ${found.auth.read},${found.auth.write}, which a job's phases cannot share; use --jobserver-auth=fifo:PATH` }
  return { path: found.auth.path }
}

function readFileOrNull(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8')
  } catch {
    return null
  }
}

/** Connect to the job's holder. Rejects with Node's errors (ENOENT: none, ECONNREFUSED: stale). */
function connect(builddir: string): Promise<net.Socket> {
  // A relative name: PORTAGE_TMPDIR may be long enough to overflow sun_path (108 bytes).
  // libuv calls connect(2) synchronously, so the directory can be changed back at once.
  const cwd = process.cwd()
  process.chdir(builddir)
  let sock: net.Socket
  try {
    sock = net.connect(SOCKET_NAME)
  } finally {
    process.chdir(cwd)
  }
  return new Promise((resolve, reject) => {
    sock.once('connect', () => {
      sock.removeListener('error', reject)
      resolve(sock)
    })
    sock.once('error', reject)
  })
}

/** Send one request; call `onReply` for every reply; resolve with the last one. */
function request(sock: net.Socket, req: Request, onReply: (r: Reply) => void = () => {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    let last: Reply | undefined
    let failure: unknown
    const rl = readline.createInterface({ input: sock, crlfDelay: Infinity })
    rl.on('line', (line) => {
      try {
        last = parseReply(line)
        onReply(last)
      } catch (e) {
        failure = e
        sock.destroy()
      }
    })
    sock.on('error', (e) => (failure ??= e))
    sock.once('close', () => {
      if (failure) return reject(failure)
      if (!last || last.type === 'wait') return reject(new ShimError('ERR_SHIM_HOLDER_GONE', 'the holder closed the connection without an answer'))
      resolve(last)
    })
    sock.write(encode(req))
  })
}

/**
 * Mark every inherited fd close-on-exec before starting the holder. Node passes its child
 * every fd it inherited without O_CLOEXEC (bash opens such fds); a holder that kept emerge's
 * log pipe or the phase's PORTAGE_PIPE_FD open would keep emerge waiting for an EOF. Node's own
 * fds are close-on-exec already, so marking all of them changes nothing else.
 */
function closeOnExecAll(native: Native): void {
  for (const name of fs.readdirSync('/proc/self/fd')) {
    const fd = Number(name)
    if (fd > 2) native.ioctl(fd, FIOCLEX, 0)
  }
}

async function startHolder(io: ShimIo, job: Job, plan: Plan, phase: string): Promise<void> {
  const log = `${job.tmp}/steved-jobserver.log`
  closeOnExecAll(io.native ?? loadNative())
  const logFd = fs.openSync(log, 'a')
  const args = ['holder', '--pkg', job.pkg, '--phase', phase, '--tokens', String(plan.holderTokens)]
  if (plan.groupLimit !== null) args.push('--group', plan.groupName, '--group-limit', String(plan.groupLimit))
  let child
  try {
    child = spawn(io.self[0], [...io.self.slice(1), ...args], { detached: true, stdio: ['ignore', 'pipe', logFd], cwd: '/', env: io.env as NodeJS.ProcessEnv })
  } finally {
    fs.closeSync(logFd)
  }
  const ready = await new Promise<string>((resolve) => {
    const rl = readline.createInterface({ input: child.stdout!, crlfDelay: Infinity })
    rl.once('line', (line) => resolve(line))
    child.once('exit', (code, signal) => resolve(`exit ${code ?? signal}`))
    child.once('error', (e) => resolve(`error ${e.message}`))
  })
  child.stdout!.destroy()
  child.unref()
  // "busy": another holder won the race for this build directory; use that one.
  if (ready !== 'ready' && ready !== 'busy') {
    throw new ShimError('ERR_SHIM_HOLDER_START', `the holder did not start (${ready}); see ${log}`)
  }
}

/** Connect to the holder, starting one when `plan` says so. Null: no holder and none started. */
async function holderSocket(io: ShimIo, job: Job, plan: Plan | null, phase: string): Promise<{ sock: net.Socket; restarted: boolean } | null> {
  let restarted = false
  try {
    return { sock: await connect(job.builddir), restarted }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ECONNREFUSED') {
      // A socket without a holder: it died without ending (SIGKILL, or FEATURES=cgroup /
      // pid-sandbox killing whatever a phase leaves running). steved took its tokens back.
      restarted = true
      fs.rmSync(`${job.builddir}/${SOCKET_NAME}`, { force: true })
    } else if (code !== 'ENOENT') {
      throw e
    }
  }
  if (!plan) return null
  await startHolder(io, job, plan, phase)
  return { sock: await connect(job.builddir), restarted }
}

function selfStart(io: ShimIo, pid: number): number {
  const p = io.proc.stat(pid)
  if (!p) throw new ShimError('ERR_SHIM_USAGE', `--pid ${pid}: no such process`)
  return p.start
}

/**
 * `steved-emerge-shim phase --pid $$`: what to do in this phase. Never fails the build: a
 * problem is a warning and the phase goes on (untokened).
 */
export async function phaseCommand(io: ShimIo, pid: number): Promise<number> {
  const ctx = contextOf(io.env)
  if (ctx.kind === 'ignored' || ctx.kind === 'die-hooks') return 0
  const js = jobserverPath(io.env)
  if (js === null) return 0
  const first = ctx.kind === 'build' && ctx.phase === 'setup'
  if ('unsupported' in js) {
    if (first) io.say('warn', `jobserver: not used: ${js.unsupported}`)
    return 0
  }
  const job = jobOf(io.env)
  const plan = makePlan(parseSettings(io.env), detectPortage(io.env, readFileOrNull), job.pkg)

  if (ctx.kind === 'post-install') return endBuild(io, job, pid)

  if (first) for (const n of plan.notes) io.say(n.level, `jobserver: ${n.text}`)

  if (plan.groupLimit !== null && joinGroup(io, js.path, plan, pid, first) === 'refused') {
    await joinThroughHolder(io, job, plan, pid, ctx.phase, first)
  }

  if (plan.holderTokens === 0) return 0
  const h = await holderSocket(io, job, plan, ctx.phase)
  if (!h) return 0
  if (h.restarted && !first) {
    // FEATURES=pid-sandbox (a Portage default) and cgroup end every phase by killing what it
    // left running, the holder included: expected there, so not a warning.
    const killer = ['pid-sandbox', 'cgroup'].filter((f) => (io.env.FEATURES ?? '').split(/\s+/).includes(f))
    if (killer.length > 0) {
      io.say('info', `jobserver: FEATURES=${killer.join(',')} ended the holder of ${job.pkg}'s token with the last phase; taking the token again`)
    } else {
      io.say('warn', `jobserver: the holder of ${job.pkg}'s token from earlier phases is gone (killed? FEATURES=cgroup and pid-sandbox kill what a phase leaves running); taking the token again`)
    }
  }
  let waited = false
  const r = await request(h.sock, { v: 1, op: 'attach', pid, start: selfStart(io, pid), phase: ctx.phase }, (m) => {
    if (m.type !== 'wait') return
    waited = true
    io.say('info', `jobserver: ${job.pkg} waits for ${plan.holderTokens === 1 ? 'a token' : `${plan.holderTokens} tokens`}: ${m.text}`)
  })
  if (r.type === 'holding') {
    const n = r.tokens === 1 ? '1 token' : `${r.tokens} tokens`
    if (r.phases.length <= 1 || waited) {
      io.say('info', `jobserver: ${job.pkg} holds ${n} until its build ends (holder pid ${r.holderPid}; ${r.jobserver})`)
    } else {
      io.say('info', `jobserver: ${job.pkg} still holds ${n} (holder pid ${r.holderPid}, since ${r.firstPhase}, ${r.heldForSeconds} s)`)
    }
    return 0
  }
  if (r.type === 'error') io.say('warn', `jobserver: ${job.pkg} runs this phase without its token: ${r.message} [${r.code}]`)
  return 0
}

function sayCapped(io: ShimIo, plan: Plan): void {
  const max = plan.groupLimit! + 1 - plan.holderTokens
  io.say('info', `jobserver: JOBSERVER_MAX_JOBS=${max}: this build runs at most ${max} job(s) at once (steved group ${plan.groupName}, ${plan.groupLimit} token(s) including the ${plan.holderTokens} the job holds itself)`)
}

/**
 * How to name the phase's shell to steved as a group root. Under FEATURES=pid-sandbox the phase
 * runs in its own pid namespace: `$$` (`pid`) and every pid this process can read in /proc are
 * pids of that namespace, which steved (outside it) would take for other processes (pid 2 of
 * the namespace is its kthreadd). So the root is named as "the caller's parent", which steved
 * resolves in its own namespace; that is right when the parent is the phase's shell or one of
 * its subshells: Portage sources the bashrc in ebuild.sh itself (setup) and in the subshell
 * `( __ebuild_main … )` that runs the phase, and the bash module starts this program as a
 * direct child of the shell that runs the hook. Null: the parent is neither (it exited, or
 * something else started this program), so there is no way to name the phase to steved.
 */
export function phaseRoot(proc: ProcFs, pid: number, ppid: number): 'parent' | null {
  // Walk up from the parent, in this namespace, to the phase's shell: a few subshells at most.
  let cur = ppid
  for (let i = 0; i < 8 && cur > 1; i++) {
    if (cur === pid) return 'parent'
    const p = proc.stat(cur)
    if (!p) return null
    cur = p.ppid
  }
  return cur === pid ? 'parent' : null
}

/**
 * Join this phase's ebuild.sh to the build's group. 'refused': steved said EPERM, the group is
 * another uid's (FEATURES=userpriv: root made it in setup); the caller asks the holder.
 */
function joinGroup(io: ShimIo, path: string, plan: Plan, pid: number, first: boolean): 'done' | 'refused' {
  const root = phaseRoot(io.proc, pid, io.ppid)
  if (root === null) {
    io.say('warn', `jobserver: JOBSERVER_MAX_JOBS is not applied: this helper's parent (pid ${io.ppid}) is not the phase's shell (pid ${pid}) nor one of its subshells, so the phase cannot be named to steved`)
    return 'done'
  }
  let c: StevedControl
  try {
    c = new StevedControl(path, io.native)
  } catch (e) {
    io.say('warn', `jobserver: JOBSERVER_MAX_JOBS is not applied: cannot open ${path}: ${describeError(e)}`)
    return 'done'
  }
  try {
    const r = c.groupJoin(plan.groupName, root, plan.groupLimit)
    if (r === 0) {
      if (first) sayCapped(io, plan)
    } else if (r === -os.constants.errno.ENOTTY) {
      if (first) io.say('warn', `jobserver: JOBSERVER_MAX_JOBS is ignored: ${path} is not steved (per-package caps are steved's process groups)`)
    } else if (r === -os.constants.errno.EPERM && plan.holderTokens > 0) {
      return 'refused'
    } else {
      io.say('warn', `jobserver: JOBSERVER_MAX_JOBS is not applied: steved refused to put pid ${pid} into group ${plan.groupName} (${errnoName(r)})`)
    }
  } finally {
    c.close()
  }
  return 'done'
}

/**
 * steved refused this phase's own join with EPERM: the group belongs to another uid. Under
 * FEATURES=userpriv setup runs as root and starts the holder as root, so the group is root's
 * and the phases run as the portage user may not join it. The holder (which joins the group
 * itself) does it for them; it checks that the process is one of this build's.
 */
async function joinThroughHolder(io: ShimIo, job: Job, plan: Plan, pid: number, phase: string, first: boolean): Promise<void> {
  const refused = `jobserver: JOBSERVER_MAX_JOBS is not applied: steved refused to put pid ${pid} into group ${plan.groupName} (EPERM)`
  let r: Reply
  try {
    const h = await holderSocket(io, job, null, phase)
    if (!h) {
      io.say('warn', `${refused}, and ${job.pkg} has no holder to do it (the group is another user's)`)
      return
    }
    r = await request(h.sock, { v: 1, op: 'join', pid, start: selfStart(io, pid), phase })
  } catch (e) {
    io.say('warn', `${refused}, and asking the holder failed: ${describeError(e)}`)
    return
  }
  if (r.type === 'joined') {
    if (first) sayCapped(io, plan)
  } else if (r.type === 'error') {
    io.say('warn', `${refused}, and the holder did not do it either: ${r.message} [${r.code}]`)
  }
}

/**
 * The build's last step, the post-install checks, has started (Portage's own token goes back
 * after it): the holder gives its tokens back once this process and whatever it runs are gone.
 */
async function endBuild(io: ShimIo, job: Job, pid: number): Promise<number> {
  const h = await holderSocket(io, job, null, 'post-install')
  if (!h) return 0
  const r = await request(h.sock, { v: 1, op: 'end', reason: 'success', pid })
  if (r.type === 'ending') io.say('info', `jobserver: build done; ${job.pkg}'s token goes back after the install checks`)
  return 0
}

/**
 * `steved-emerge-shim built --pid $$`, from the bash module in misc-functions.sh before the
 * post-install checks. The module says so on the command line: misc-functions.sh keeps its
 * arguments in MISC_FUNCTIONS_ARGS, a shell variable it does not export, so this process
 * cannot tell the post-install checks from any other misc-functions.sh run by itself.
 */
export async function builtCommand(io: ShimIo, pid: number): Promise<number> {
  if (!io.env.PORTAGE_BUILDDIR || jobserverPath(io.env) === null) return 0
  return endBuild(io, jobOf(io.env), pid)
}

/** `steved-emerge-shim die --pid $$`, from the die hook: the job failed. */
export async function dieCommand(io: ShimIo, pid: number): Promise<number> {
  if (!io.env.PORTAGE_BUILDDIR) return 0
  const job = jobOf(io.env)
  const h = await holderSocket(io, job, null, 'die')
  if (!h) return 0
  const r = await request(h.sock, { v: 1, op: 'end', reason: 'failed', pid })
  if (r.type === 'ending') io.say('info', `jobserver: ${job.pkg} failed; its token goes back once its ${r.waitingFor} remaining process(es) are gone`)
  return 0
}

/** `steved-emerge-shim status`: the holder's state as JSON (exit 1 when there is none). */
export async function statusCommand(io: ShimIo, out: (s: string) => void): Promise<number> {
  const job = jobOf(io.env)
  const h = await holderSocket(io, job, null, 'status')
  if (!h) {
    io.stderr(`steved-emerge-shim: no holder for ${job.pkg} in ${job.builddir}\n`)
    return 1
  }
  const r = await request(h.sock, { v: 1, op: 'status' })
  out(`${JSON.stringify(r)}\n`)
  return 0
}
