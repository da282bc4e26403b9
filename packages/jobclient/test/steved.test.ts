// jobclient against a real steved serving a FUSE file (root and /dev/fuse needed; the helper
// fails loudly without them): acquire/release, abort, signals while waiting, tokens of a
// SIGKILLed holder coming back, a poller and a blocking reader sharing one token, acquireMany,
// and `jobclient run make` drawing from steved.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { JobClient, type Token } from '../dist/client'
import { maxOverlap, parseJobLog } from '../../../test/helpers/joblog'
import { run, start } from '../../../test/helpers/proc'
import { startSteved, waitForStatus, type RunningSteved } from '../../../test/helpers/steved'
import { FIXTURES, JOBCLIENT_BIN, MAKE44, tmpDir } from './helpers/pool'

const CLIENT = path.join(FIXTURES, 'client.js')
const WORKER = path.join(FIXTURES, 'make-worker.js')
const free = (s: RunningSteved, n: number) => waitForStatus(s, (r) => r.pool.free === n, `${n} free tokens`)
const idle = (s: RunningSteved, jobs: number) =>
  waitForStatus(
    s,
    (r) => r.pool.free === jobs && r.waiters.length === 0 && r.reservations.length === 0,
    'all tokens free, no waiter, no reservation',
  )

t.test('acquire and release through the FUSE file; a waiting acquire is woken by poll', async (t) => {
  const s = await startSteved(t, { jobs: 3 })
  const c = JobClient.open(s.path, { handleSignals: false })
  t.teardown(() => c.close())
  const toks: Token[] = []
  for (let i = 0; i < 3; i++) toks.push(await c.acquire())
  t.equal(c.polling, false, 'not polling while nobody waits')
  let rep = await free(s, 0)
  t.equal(rep.holders.find((h) => h.pid === process.pid)?.tokens, 3, 'steved sees this process holding 3')
  const waiting = c.acquire()
  t.equal(c.polling, true)
  await waitForStatus(s, (r) => r.waiters.some((w) => w.how === 'poll'), 'our poll to queue in steved')
  toks[0].release()
  toks[0] = await waiting
  t.equal(c.polling, false)
  for (const x of toks) x.release()
  rep = await idle(s, 3)
  const k = rep.counters
  t.equal(k.granted, 4)
  t.equal(k.returned, 4, 'every token written back')
  t.equal(k.enospc, 0, 'never more than we held')
  t.equal(k.interrupts, 0, 'never parked in a blocking read')
})

t.test('abort: the aborted poller takes nothing, and the next client gets the token', async (t) => {
  const s = await startSteved(t, { jobs: 1 })
  const holder = JobClient.open(s.path, { handleSignals: false })
  t.teardown(() => holder.close())
  const tok = await holder.acquire()
  const b = JobClient.open(s.path, { handleSignals: false })
  t.teardown(() => b.close())
  const ac = new AbortController()
  const p = b.acquire({ signal: ac.signal })
  await waitForStatus(s, (r) => r.waiters.some((w) => w.how === 'poll'), 'the poll to queue')
  ac.abort()
  await t.rejects(p, { code: 'ABORT_ERR' })
  t.equal(b.polling, false)
  const c = start(t, process.execPath, [CLIENT, 'loop', '1', '0'], { env: { ...process.env, MAKEFLAGS: s.makeflags } })
  await c.waitFor(/^looping$/m)
  tok.release()
  await c.waitFor(/^acquired 1$/m)
  t.equal(b.held, 0, 'the aborted client holds nothing')
  await idle(s, 1)
})

t.test('signals arriving while waiting do not disturb the wait (and no read was ever parked)', async (t) => {
  const s = await startSteved(t, { jobs: 1 })
  const holder = start(t, process.execPath, [CLIENT, 'hold', '1', 'wait'], { env: { ...process.env, MAKEFLAGS: s.makeflags } })
  await holder.waitFor(/^held/m)
  const w = start(t, process.execPath, [CLIENT, 'signals'], { env: { ...process.env, MAKEFLAGS: s.makeflags } })
  await w.waitFor(/^waiting$/m)
  for (let k = 1; k <= 5; k++) {
    w.child.kill('SIGUSR1')
    await w.waitFor(new RegExp(`^usr1 ${k}$`, 'm'))
  }
  holder.child.kill('SIGTERM')
  await w.waitFor(/^got \d+$/m)
  t.equal((await w.exited).code, 0)
  const rep = await idle(s, 1)
  t.equal(rep.counters.interrupts, 0, 'steved never had to interrupt a read of ours')
  t.equal(rep.counters.reclaimed, 0, 'the SIGTERMed holder gave its token back itself')
})

t.test('SIGKILL of a holder (library user, or agent) gives the tokens back', async (t) => {
  const s = await startSteved(t, { jobs: 3 })
  const env = { ...process.env, MAKEFLAGS: s.makeflags }
  const lib = start(t, process.execPath, [CLIENT, 'hold', '2', 'wait'], { env })
  await lib.waitFor(/^held/m)
  await free(s, 1)
  lib.child.kill('SIGKILL')
  let rep = await free(s, 3)
  t.ok(rep.counters.reclaimed >= 2, 'steved reclaimed the two tokens')

  const agent = start(t, process.execPath, [JOBCLIENT_BIN, 'agent'], { env, stdio: ['pipe', 'pipe', 'pipe'] })
  await agent.waitFor(/^ready 1$/m)
  agent.child.stdin!.write('acquire 3\n')
  await agent.waitFor(/^ok 1 2 3$/m)
  await free(s, 0)
  agent.child.kill('SIGKILL')
  rep = await idle(s, 3)
  t.ok(rep.counters.reclaimed >= 5, 'and the agent’s three')
})

t.test('a jobclient poller and a blocking reader sharing one token both make progress', async (t) => {
  // With one token, a blocking reader that gives it back and reads again at once would win
  // every round against a client that must poll first; steved reserves the token for a poller
  // it woke, and jobclient reads at once on that fd, so both get their turns.
  const s = await startSteved(t, { jobs: 1 })
  const rounds = 25
  const reader = start(t, 'python3', [
    '-c',
    [
      'import os, sys, time',
      'fd = os.open(sys.argv[1], os.O_RDWR)',
      'print("reading", flush=True)',
      'for i in range(int(sys.argv[2])):',
      '    b = os.read(fd, 1)',
      '    time.sleep(0.005)',
      '    os.write(fd, b)',
      'print("acquired", sys.argv[2], flush=True)',
    ].join('\n'),
    s.path,
    String(rounds),
  ])
  const poller = start(t, process.execPath, [CLIENT, 'loop', String(rounds), '5'], { env: { ...process.env, MAKEFLAGS: s.makeflags } })
  const [r, p] = await Promise.all([reader.exited, poller.exited])
  t.match(r.stdout, new RegExp(`acquired ${rounds}`), 'the blocking reader finished its rounds')
  t.match(p.stdout, new RegExp(`acquired ${rounds}`), 'the jobclient poller finished its rounds')
  await idle(s, 1)
})

t.test('acquireMany: two processes each holding half of the pool and wanting 3 of 4 both finish', async (t) => {
  const s = await startSteved(t, { jobs: 4 })
  const env = { ...process.env, MAKEFLAGS: s.makeflags }
  const h = start(t, process.execPath, [CLIENT, 'hold', '2', 'wait'], { env })
  await h.waitFor(/^held/m)
  // A must still hold its two when it is stopped, however slow this machine is: its stall
  // is long, so the deadlock below is broken by B giving up (B keeps the short default).
  const a = start(t, process.execPath, [CLIENT, 'many', '3'], { env: { ...env, JOBCLIENT_TEST_STALL_MS: '60000' } })
  await free(s, 0) // A holds the other two
  process.kill(a.pid, 'SIGSTOP')
  t.teardown(() => {
    if (a.child.exitCode === null && a.child.signalCode === null) process.kill(a.pid, 'SIGCONT')
  })
  h.child.kill('SIGTERM')
  await h.exited
  const b = start(t, process.execPath, [CLIENT, 'many', '3'], { env })
  await b.waitFor(/^waiting$/m)
  await waitForStatus(s, (r) => r.holders.filter((h) => h.tokens === 2).length >= 2, 'A and B to hold two each')
  process.kill(a.pid, 'SIGCONT')
  const [da, db] = await Promise.all([a.exited, b.exited])
  t.match(da.stdout, /got 3\ndone/, `A finished ${da.stderr}`)
  t.match(db.stdout, /got 3\ndone/, `B finished ${db.stderr}`)
  await idle(s, 4)
})

t.test('`jobclient run make` draws from steved: our token is make’s implicit slot', async (t) => {
  const s = await startSteved(t, { jobs: 3 })
  const dir = tmpDir(t)
  fs.mkdirSync(path.join(dir, 'live'))
  const names = Array.from({ length: 7 }, (_, i) => `u${i}`)
  let mk = `all: ${names.join(' ')}\n.PHONY: all ${names.join(' ')}\n`
  for (const u of names) mk += `${u}:\n\t+@${JSON.stringify(process.execPath)} ${WORKER} units ${u} 1 3 ${dir}\n`
  fs.writeFileSync(path.join(dir, 'Makefile'), mk)
  const r = await run(process.execPath, [JOBCLIENT_BIN, 'run', '--', MAKE44, '-C', dir], {
    env: { ...process.env, MAKEFLAGS: s.makeflags },
    timeoutMs: 120000,
  })
  t.equal(r.code, 0, r.stderr)
  const jobs = parseJobLog(fs.readFileSync(path.join(dir, 'jobs.log'), 'utf8'))
  t.equal(jobs.length, 7)
  t.equal(maxOverlap(jobs), 3, 'three at once: our token plus the two make took')
  const rep = await idle(s, 3)
  t.equal(rep.counters.reclaimed, 0, 'everything was returned, nothing had to be reclaimed')
})
