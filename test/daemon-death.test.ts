// Daemon death and restart (issue 10): what clients see when steved is SIGKILLed on the FUSE
// transport, what real make 4.4 and cargo do when it dies mid-build, and that a steved
// restarted on the same path cleans the stale mount and serves a client that re-opens.
// docs/protocol.md ("When steved dies") writes the answers down.

import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import t from 'tap'

import { run, start } from './helpers/proc'
import { MAKE44, startSteved, tmpDir, waitForStatus, type RunningSteved } from './helpers/steved'

const DEATH = path.join(__dirname, 'clients', 'death.py')

/** The promise's value, or null if it did not settle within `ms` (the timer never outlives it). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined
  const r = await Promise.race([p, new Promise<null>((res) => (timer = setTimeout(() => res(null), ms)))])
  clearTimeout(timer)
  return r
}

async function killDaemon(s: RunningSteved): Promise<void> {
  s.child.kill('SIGKILL')
  if (s.child.exitCode === null && s.child.signalCode === null) await new Promise((r) => s.child.once('exit', r))
}

t.test('steved SIGKILLed: parked reader ECONNABORTED, poller POLLERR, holder ENOTCONN on return, new opens ENOTCONN', async (t) => {
  const s = await startSteved(t, { jobs: 1 })
  const holder = start(t, 'python3', [DEATH, s.path, 'hold'])
  await holder.waitFor(/^held$/m)
  const blocker = start(t, 'python3', [DEATH, s.path, 'block'])
  const poller = start(t, 'python3', [DEATH, s.path, 'poll'])
  await blocker.waitFor(/^parking$/m)
  await poller.waitFor(/^polling$/m)
  await waitForStatus(s, (r) => r.waiters.some((w) => w.how === 'read' && w.reason === 'no-tokens') && r.waiters.some((w) => w.how === 'poll' && w.reason === 'no-tokens'), 'a parked reader and a poller')

  await killDaemon(s)
  const b = await blocker.exited
  t.match(b.stdout, /^read ECONNABORTED$/m, 'the parked read fails with ECONNABORTED (the connection was aborted)')
  t.match(b.stdout, /^read-again ENOTCONN$/m, 'every later call on that descriptor: ENOTCONN')
  const p = await poller.exited
  t.match(p.stdout, /^poll POLLERR$/m, 'the poller wakes with POLLERR')
  t.match(p.stdout, /^read ENOTCONN$/m)
  t.match(p.stdout, /^open ENOTCONN$/m, 'opening the path again: ENOTCONN')
  holder.child.kill('SIGUSR1')
  const h = await holder.exited
  t.match(h.stdout, /^write ENOTCONN$/m, 'returning a token: ENOTCONN')
  t.match(h.stdout, /^close ok$/m, 'close still succeeds')
  t.throws(() => fs.statSync(s.path), { code: 'ENOTCONN' }, 'the path is a dead mount until someone detaches it')
})

t.test('a restarted steved cleans the stale mount; a long-running client that re-opens works again', async (t) => {
  const dir = tmpDir(t)
  const first = await startSteved(t, { jobs: 2, dir })
  const client = start(t, 'python3', [DEATH, first.path, 'reconnect'])
  await client.waitFor(/^acquired 3$/m)
  await killDaemon(first)
  await client.waitFor(/^error (ECONNABORTED|ENOTCONN)$/m)
  const errorsBefore = client.output().length

  const second = await startSteved(t, { jobs: 2, dir, args: ['-v'] })
  t.match(second.stderr(), /cleaned up a stale mount/, 'the new steved detached the dead mount at start')
  const after = (): string => client.output().slice(errorsBefore)
  const until = Date.now() + 20000
  while (!/^opened\n(acquired \d+\n){2}/m.test(after()) && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
  t.match(after(), /^opened\n(acquired \d+\n){2}/m, 'the client re-opened the path and takes tokens again')

  // A real make 4.4 build under the new steved.
  fs.writeFileSync(path.join(dir, 'Makefile'), 'all: a b c d\na b c d:\n\t@sleep 0.1\n.PHONY: all a b c d\n')
  const make = await run(MAKE44, ['-C', dir], { env: { ...process.env, MAKEFLAGS: second.makeflags }, timeoutMs: 60000 })
  t.equal(make.code, 0, `make works against the restarted steved ${make.stderr}`)
  client.child.kill('SIGKILL')
  await client.exited
  await waitForStatus(second, (r) => r.pool.free === 2 && r.holders.length === 0 && r.waiters.length === 0, 'the new pool whole')
})

t.test('make 4.4 when steved dies mid-build: "read jobs pipe" error, exit 2', async (t) => {
  const dir = tmpDir(t)
  const s = await startSteved(t, { jobs: 2, dir })
  const log = path.join(dir, 'jobs.log')
  const jobs = Array.from({ length: 8 }, (_, i) => `j${i}`)
  fs.writeFileSync(
    path.join(dir, 'Makefile'),
    `all: ${jobs.join(' ')}\n.PHONY: all ${jobs.join(' ')}\n${jobs.join(' ')}:\n\t@echo start $@ >> ${log}; sleep 2; echo end $@ >> ${log}\n`,
  )
  // Its own process group, so teardown can kill the recipes make leaves behind.
  const make = start(t, MAKE44, ['-C', dir], { env: { ...process.env, MAKEFLAGS: s.makeflags }, detached: true })
  t.teardown(() => {
    try {
      process.kill(-make.pid, 'SIGKILL')
    } catch {
      /* already gone */
    }
  })
  // make holds both tokens (plus its implicit slot) and waits in pselect for a third.
  await waitForStatus(s, (r) => r.pool.free === 0 && r.waiters.some((w) => w.how === 'poll'), 'make holding every token and polling for more')
  await killDaemon(s)
  const bounded = await within(make.exited, 30000)
  t.ok(bounded, 'make ended on its own')
  if (!bounded) return
  t.equal(bounded.code, 2, 'make exits 2')
  t.match(bounded.stderr, /read jobs pipe: Transport endpoint is not connected\.\s+Stop\./, 'make stops on the failed read')
  t.comment(`make's stderr: ${bounded.stderr.trim().split('\n').join(' | ')}`)
  const started = (fs.readFileSync(log, 'utf8').match(/^start/gm) ?? []).length
  t.ok(started < jobs.length, `make started no new jobs after the error (${started} of ${jobs.length} started)`)
})

function findCargo(): string {
  for (const d of (process.env.PATH ?? '').split(':').concat(path.join(os.homedir(), '.cargo', 'bin'))) {
    if (fs.existsSync(path.join(d, 'cargo'))) return path.join(d, 'cargo')
  }
  throw new Error('cargo not found (this test needs rustup cargo on PATH or in ~/.cargo/bin)')
}

t.test('cargo when steved dies mid-build: "failed to acquire jobserver token", exit 101', async (t) => {
  const cargo = findCargo()
  const dir = tmpDir(t)
  const s = await startSteved(t, { jobs: 2, dir })
  // Four crates whose build scripts each take 3 s: more jobs than tokens, for long enough.
  const ws = path.join(dir, 'ws')
  const crates = ['c0', 'c1', 'c2', 'c3']
  fs.mkdirSync(ws)
  fs.writeFileSync(path.join(ws, 'Cargo.toml'), `[workspace]\nresolver = "2"\nmembers = [${crates.map((c) => `"${c}"`).join(', ')}]\n`)
  for (const c of crates) {
    fs.mkdirSync(path.join(ws, c, 'src'), { recursive: true })
    fs.writeFileSync(path.join(ws, c, 'Cargo.toml'), `[package]\nname = "${c}"\nversion = "0.1.0"\nedition = "2021"\n`)
    fs.writeFileSync(path.join(ws, c, 'src', 'lib.rs'), 'pub fn f() -> u32 { 1 }\n')
    fs.writeFileSync(path.join(ws, c, 'build.rs'), 'fn main() { std::thread::sleep(std::time::Duration::from_secs(3)); }\n')
  }
  const build = start(t, cargo, ['build', '--offline'], {
    cwd: ws,
    env: { ...process.env, MAKEFLAGS: s.makeflags, CARGO_TARGET_DIR: path.join(dir, 'target') },
  })
  await waitForStatus(s, (r) => r.pool.free === 0 && r.waiters.some((w) => w.how === 'read' && /cargo/.test(w.cmdline)), 'cargo holding every token with its helper parked in a read', 60000)
  await killDaemon(s)
  const bounded = await within(build.exited, 60000)
  t.ok(bounded, 'cargo ended on its own')
  if (!bounded) return
  t.equal(bounded.code, 101, 'cargo fails the build')
  t.match(bounded.stderr, /error: failed to acquire jobserver token/, 'saying it lost the jobserver')
  t.match(bounded.stderr, /Software caused connection abort \(os error 103\)|Transport endpoint is not connected \(os error 107\)/)
})
