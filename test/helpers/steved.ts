// Start a real steved on a FUSE file for a test, and make sure it is stopped and unmounted
// afterwards, even when the test fails. Needs root and /dev/fuse; fails loudly without them.

import { spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import type { Status } from 'jobclient'

import { tmpDir } from './common'
import { run } from './proc'

export const ROOT = process.env.STEVED_ROOT ?? path.resolve(__dirname, '..', '..')
export const STEVED_BIN = path.join(ROOT, 'packages', 'steved', 'bin', 'steved.js')
export const STEVECTL_BIN = path.join(ROOT, 'packages', 'steved', 'bin', 'stevectl.js')
/** GNU make 4.4.x from the project's venv (Debian's /usr/bin/make is 4.3). */
export const MAKE44 = process.env.STEVED_MAKE44 ?? path.join(ROOT, '.venv', 'bin', 'make')

export interface RunningSteved {
  path: string
  makeflags: string
  pid: number
  child: ChildProcess
  /** Everything steved wrote to stderr so far. */
  stderr(): string
  /** Ask for the SIGUSR1 report and return it (for tests of the report itself). */
  report(): Promise<string>
  /**
   * The status document, as `stevectl status --json` prints it. Read by a short-lived stevectl:
   * steved keeps watching any process that opened the jobserver, and the test's own process
   * lives on (tests count steved's descriptors).
   */
  status(): Promise<Status>
  /** SIGTERM, wait, and check the mount is gone. Idempotent. */
  stop(): Promise<void>
}

interface Teardown {
  teardown(fn: () => unknown): void
}

export function requireFuseRoot(): void {
  if (process.getuid?.() !== 0) throw new Error('this test needs root (it mounts FUSE file systems)')
  if (!fs.existsSync('/dev/fuse')) throw new Error('this test needs /dev/fuse')
}

export function isMounted(file: string): boolean {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === file)
}

export { tmpDir }

export async function startSteved(
  t: Teardown,
  /**
   * jobs null: no -j, so a --config file may set it. Tests get --mode 0666 (clients run as
   * other users too) unless they pass their own --mode or ask for steved's default access.
   */
  opts: { jobs: number | null; args?: string[]; dir?: string; env?: NodeJS.ProcessEnv; defaultAccess?: boolean } = { jobs: 2 },
): Promise<RunningSteved> {
  requireFuseRoot()
  const dir = opts.dir ?? tmpDir(t)
  const file = path.join(dir, 'jobserver')
  const args = opts.args ?? []
  const mode = opts.defaultAccess || args.some((a) => a === '--mode' || a.startsWith('--mode=')) ? [] : ['--mode', '0666']
  const child = spawn(process.execPath, [STEVED_BIN, '--transport', 'fuse', '--path', file, ...(opts.jobs === null ? [] : ['-j', String(opts.jobs)]), ...mode, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
  })
  let out = ''
  let err = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
    // Whatever happened, leave no mount behind.
    if (isMounted(file)) spawnSyncQuiet('umount', ['-l', file])
  }
  t.teardown(stop)

  const deadline = Date.now() + 20000
  while (!/^MAKEFLAGS=(.*)$/m.test(out)) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`steved exited early (${child.exitCode ?? child.signalCode}): ${err.trim()}`)
    }
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`steved did not start within 20 s; stderr: ${err.trim()}`)
    }
    await new Promise((r) => setTimeout(r, 20))
  }
  const makeflags = /^MAKEFLAGS=(.*)$/m.exec(out)![1]

  return {
    path: file,
    makeflags,
    pid: child.pid!,
    child,
    stderr: () => err,
    async report(): Promise<string> {
      const before = err.length
      child.kill('SIGUSR1')
      const until = Date.now() + 5000
      while (!/since start:.*\n/.test(err.slice(before))) {
        if (Date.now() > until) throw new Error(`no SIGUSR1 report; stderr: ${err.slice(before)}`)
        await new Promise((r) => setTimeout(r, 10))
      }
      const chunk = err.slice(before)
      return chunk.slice(chunk.indexOf('steved status at'), chunk.indexOf('\n', chunk.indexOf('since start:')))
    },
    async status(): Promise<Status> {
      const r = await run(process.execPath, [STEVECTL_BIN, '--device', file, 'status', '--json'], { timeoutMs: 20000 })
      if (r.code !== 0) throw new Error(`stevectl status --json failed (${r.code ?? r.signal}): ${r.stderr.trim()}`)
      return JSON.parse(r.stdout) as Status
    },
    stop,
  }
}

/** Poll the status document until `pred` holds (the daemon reacts asynchronously to exits). */
export async function waitForStatus(s: RunningSteved, pred: (st: Status) => boolean, what: string, ms = 10000): Promise<Status> {
  const until = Date.now() + ms
  let st = await s.status()
  while (!pred(st)) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; last status:\n${JSON.stringify(st, null, 2)}`)
    await new Promise((res) => setTimeout(res, 50))
    st = await s.status()
  }
  return st
}

/** Nobody holds, waits or has a reservation, and every token is free. */
export function poolWhole(st: Status): boolean {
  return st.pool.free === st.pool.jobs && st.holders.length === 0 && st.waiters.length === 0 && st.reservations.length === 0
}

/** Poll the SIGUSR1 report until `pred` holds (for tests of the report itself; others use waitForStatus). */
export async function waitForReport(s: RunningSteved, pred: (r: string) => boolean, what: string, ms = 10000): Promise<string> {
  const until = Date.now() + ms
  let r = await s.report()
  while (!pred(r)) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; last report:\n${r}`)
    await new Promise((res) => setTimeout(res, 50))
    r = await s.report()
  }
  return r
}

function spawnSyncQuiet(cmd: string, args: string[]): void {
  try {
    require('node:child_process').spawnSync(cmd, args, { stdio: 'ignore' })
  } catch {
    /* best effort */
  }
}
