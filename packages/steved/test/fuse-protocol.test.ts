// The jobserver protocol over a real FUSE mount: each behaviour a real client depends on
// (research/clients.md section 10), driven by small Python clients with exact syscalls.

import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import t from 'tap'

import { run, start } from '../../../test/helpers/proc'
import { isMounted, startSteved, waitForReport, waitForStatus } from '../../../test/helpers/steved'
import type { Status } from 'jobclient'

const CLIENT = path.join(__dirname, 'clients', 'jsclient.py')
const py = (p: string, ...args: string[]) => run('python3', [CLIENT, p, ...args], { timeoutMs: 30000 })
const allFree = (jobs: number) => (r: Status) => r.pool.free === jobs && r.waiters.length === 0

t.test('a read of any size returns exactly one byte, never EOF', async (t) => {
  const s = await startSteved(t, { jobs: 2 })
  const r = await py(s.path, 'bigread')
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^len 1$/m)
  await waitForStatus(s, allFree(2), 'the token back')
})

t.test('O_NONBLOCK set with fcntl after a blocking open is honoured per read (EAGAIN)', async (t) => {
  const s = await startSteved(t, { jobs: 3 })
  const r = await py(s.path, 'fcntl-nonblock')
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^drained 3 then EAGAIN$/m)
  const rep = await waitForStatus(s, allFree(3), 'tokens back')
  t.ok(rep.counters.eagain >= 1, 'steved counted the EAGAIN')
})

t.test('poll: no POLLIN on an empty pool; a returned token wakes a waiting poller', async (t) => {
  const s = await startSteved(t, { jobs: 1 })
  const holder = start(t, 'python3', [CLIENT, s.path, 'hold', '1'])
  await holder.waitFor(/^held 1/m)
  const empty = await py(s.path, 'poll-empty')
  t.match(empty.stdout, /^revents \[\]$/m, 'poll(0) does not report POLLIN')
  const poller = start(t, 'python3', [CLIENT, s.path, 'poll-wait'])
  await poller.waitFor(/^polling$/m)
  await waitForStatus(s, (r) => r.waiters.some((w) => w.how === 'poll' && w.reason === 'no-tokens'), 'the poller to queue')
  holder.child.kill('SIGKILL')
  await poller.waitFor(/^woke and read b'\+'$/m)
  t.pass('poller woke and read the reclaimed token')
})

t.test('a parked reader interrupted by a signal gets EINTR and the token is not lost', async (t) => {
  const s = await startSteved(t, { jobs: 1 })
  const holder = start(t, 'python3', [CLIENT, s.path, 'hold', '1'])
  await holder.waitFor(/^held 1/m)
  const r = await py(s.path, 'interrupt', '0.3')
  t.match(r.stdout, /^EINTR$/m)
  const rep = await s.status()
  t.ok(rep.counters.interrupts >= 1, 'steved answered the FUSE interrupt')
  t.same(rep.waiters, [], 'the interrupted reader left the queue')
  holder.child.kill('SIGKILL')
  await waitForStatus(s, allFree(1), 'the held token reclaimed')
})

t.test('SIGKILL of a holder, and of a parked reader, gives everything back', async (t) => {
  const s = await startSteved(t, { jobs: 3 })
  const holder = start(t, 'python3', [CLIENT, s.path, 'hold', '3'])
  await holder.waitFor(/^held 3/m)
  const parked = start(t, 'python3', [CLIENT, s.path, 'block'])
  await parked.waitFor(/^parking/m)
  await waitForStatus(s, (r) => r.waiters.some((w) => w.how === 'read' && w.reason === 'no-tokens'), 'the reader to park')
  parked.child.kill('SIGKILL')
  const d = await parked.exited
  t.equal(d.signal, 'SIGKILL', 'the parked reader died (not stuck in D state)')
  holder.child.kill('SIGKILL')
  const rep = await waitForStatus(s, allFree(3), 'all tokens back')
  t.equal(rep.counters.reclaimed, 3, 'three tokens reclaimed from the killed holder')
})

t.test('tokens are per process: read on one fd, any byte value returned on another', async (t) => {
  const s = await startSteved(t, { jobs: 2 })
  const r = await py(s.path, 'two-fds')
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^ok b'\+' b'\+'$/m)
  const rep = await waitForStatus(s, allFree(2), 'tokens back')
  t.equal(rep.counters.returned, 2, 'returned, not reclaimed')
  t.equal(rep.counters.reclaimed, 0)
})

t.test('returning more than held is ENOSPC, except one early return', async (t) => {
  const s = await startSteved(t, { jobs: 2 })
  const r = await py(s.path, 'enospc')
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^early return ok$/m)
  t.match(r.stdout, /^second early return ENOSPC$/m)
  t.match(r.stdout, /^over-return ENOSPC$/m)
  await waitForStatus(s, allFree(2), 'the pool back to 2 after the process exits')
})

t.test('a token read by a thread belongs to its process (TGID)', async (t) => {
  const s = await startSteved(t, { jobs: 2 })
  const c = start(t, 'python3', [CLIENT, s.path, 'thread-hold'])
  const m = await c.waitFor(/^held (\d+) (\d+)$/m)
  t.not(m[1], m[2], 'the read came from another thread')
  const rep = await s.status()
  t.same(rep.holders.map((h) => [h.pid, h.tokens]), [[Number(m[1]), 1]], 'the holder is the process id, not the thread id')
  c.child.kill('SIGKILL')
  await waitForStatus(s, allFree(2), 'reclaimed on exit')
})

t.test('blocking readers and a polling client sharing one token all make progress', async (t) => {
  // Without reservations a parked blocking read wins every hand-over (the poller must poll,
  // then read, and by then the token is gone), and the poller starves.
  const s = await startSteved(t, { jobs: 1 })
  const clients = [
    start(t, 'python3', [CLIENT, s.path, 'blocking-loop', '3', '0.03']),
    start(t, 'python3', [CLIENT, s.path, 'blocking-loop', '3', '0.03']),
    start(t, 'python3', [CLIENT, s.path, 'polling-loop', '3', '0.03']),
  ]
  const done = await Promise.all(clients.map((c) => c.exited))
  const counts = done.map((d) => Number(/acquired (\d+)/.exec(d.stdout)?.[1]))
  t.ok(counts[0] >= 3, `first blocking reader acquired ${counts[0]} times`)
  t.ok(counts[1] >= 3, `second blocking reader acquired ${counts[1]} times`)
  t.ok(counts[2] >= 3, `polling client acquired ${counts[2]} times`)
  await waitForStatus(s, allFree(1), 'the token back')
})

t.test('SIGUSR1 report names holders, waiters with reasons, and counters', async (t) => {
  const s = await startSteved(t, { jobs: 1, args: ['-p', '1'] })
  const holder = start(t, 'python3', [CLIENT, s.path, 'hold', '1'])
  const hm = await holder.waitFor(/^held 1 (\d+)$/m)
  const waiter = start(t, 'python3', [CLIENT, s.path, 'block'])
  await waiter.waitFor(/^parking/m)
  const rep = await waitForReport(s, (r) => /because: no-tokens/.test(r), 'a waiter in the report')
  t.match(rep, /0\/1 tokens free, 1 held, 0 reserved/)
  t.match(rep, new RegExp(`pid ${hm[1]}  1 token  held [0-9.]+s  .*jsclient\\.py .* hold 1`), 'holder with age and cmdline')
  t.match(rep, new RegExp(`pid ${waiter.pid}  read  waiting [0-9.]+s  because: no-tokens  .*block`), 'waiter with reason')
  t.match(rep, /limits: per-process <= 1/)
  holder.child.kill('SIGKILL')
  await waiter.waitFor(/^got b'\+'$/m)
})

t.test('SIGTERM unmounts; a mount left by a killed steved is cleaned up at the next start', async (t) => {
  const first = await startSteved(t, { jobs: 2 })
  const dir = path.dirname(first.path)
  first.child.kill('SIGKILL')
  await new Promise((r) => first.child.once('exit', r))
  t.throws(() => fs.statSync(first.path), { code: 'ENOTCONN' }, 'the dead mount is stale')
  const second = await startSteved(t, { jobs: 2, dir, args: ['-v'] })
  t.match(second.stderr(), /cleaned up a stale mount/)
  const r = await py(second.path, 'bigread')
  t.match(r.stdout, /^len 1$/m, 'the new server serves')
  await second.stop()
  t.equal(second.child.exitCode, 0, 'exit 0 on SIGTERM')
  const mounted = fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${second.path} `)
  t.notOk(mounted, 'unmounted')
  t.ok(fs.statSync(second.path).isFile(), 'the plain file is back')
})

t.test('a path already served by a running steved is refused with exit 1', async (t) => {
  const s = await startSteved(t, { jobs: 2 })
  const r = await run(process.execPath, [path.join(__dirname, '..', 'bin', 'steved.js'), '--transport', 'fuse', '--path', s.path, '-j', '1'], { timeoutMs: 20000 })
  t.equal(r.code, 1)
  t.match(r.stderr, /already a mount point/)
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  const again = await py(s.path, 'bigread')
  t.match(again.stdout, /^len 1$/m, 'the first server still serves')
})

t.test('with --user, the FUSE mount still goes away when steved exits (SIGTERM or SIGKILL)', async (t) => {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'steved-user-'))
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    fs.chmodSync(dir, 0o755)
    const s = await startSteved(t, { jobs: 1, dir, args: ['--user', 'nobody'] })
    const status = fs.readFileSync(`/proc/${s.pid}/status`, 'utf8')
    t.match(status, /^Uid:\s+65534\s/m, 'steved dropped to nobody')
    t.match((await py(s.path, 'bigread')).stdout, /^len 1$/m, 'and serves')
    s.child.kill(signal)
    await new Promise((r) => s.child.once('exit', r))
    const until = Date.now() + 10000
    while (isMounted(s.path) && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
    t.notOk(isMounted(s.path), `unmounted after ${signal}`)
    t.ok(fs.statSync(s.path).isFile(), 'the plain file is back')
  }
})

t.test('a release on a descriptor shared with a thread parked in read() is not held up by it', async (t) => {
  // Without FOPEN_STREAM the kernel's file position lock makes the write wait for the parked
  // read, which waits for that very token: a deadlock (jobserver-rs < 0.1.32 uses one fd).
  const s = await startSteved(t, { jobs: 1 })
  const c = start(t, 'python3', [CLIENT, s.path, 'shared-fd-threads'])
  await c.waitFor(/^writing 1$/m)
  await c.waitFor(/^write returned$/m, 15000)
  await c.waitFor(/^helper got b'\+'$/m)
  t.pass('the write returned and the parked helper got the token')
})
