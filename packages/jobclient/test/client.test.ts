// JobClient against plain FIFOs pre-filled with tokens (the simplest real jobserver), in this
// process and in child processes: acquire, release of the same byte, the implicit slot,
// abort, order, close, EOF/EINTR/EAGAIN handling, and tokens given back at exit and on signals.
import * as os from 'node:os'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { JobClient, type Token } from '../dist/client'
import type { JobserverAuth } from '../dist/makeflags'
import { loadNative, type Native } from '../dist/native'
import { start } from '../../../test/helpers/proc'
import { FIXTURES, makePool, waitUntil } from './helpers/pool'

const CLIENT = path.join(FIXTURES, 'client.js')
const { EAGAIN, EINTR } = os.constants.errno

/** A client closed at teardown. Signals stay with tap (handleSignals: false). */
function open(t: Test, target: string | JobserverAuth, options: Parameters<typeof JobClient.open>[1] = {}): JobClient {
  const c = JobClient.open(target, { handleSignals: false, ...options })
  t.teardown(() => c.close())
  return c
}

t.test('acquire reads one byte; release writes back that same byte', async (t) => {
  const pool = makePool(t, 'xyz')
  const c = open(t, pool.path)
  const tok = await c.acquire()
  t.equal(tok.kind, 'explicit')
  t.equal(tok.kind === 'explicit' && String.fromCharCode(tok.byte), 'x', 'the first byte of the FIFO')
  t.equal(pool.count(), 2, 'one byte taken')
  t.equal(c.held, 1)
  t.equal(tok.release(), true)
  t.equal(tok.release(), false, 'a second release does nothing')
  t.equal(tok.released, true)
  t.equal(c.held, 0)
  t.equal(pool.drain(), 'yzx', 'x went back, behind the others')
})

t.test('the implicit slot is a token that needs no read', async (t) => {
  const pool = makePool(t, 'a')
  const c = open(t, pool.path, { implicitSlot: true })
  const first = await c.acquire()
  t.equal(first.kind, 'implicit')
  t.equal(pool.count(), 1, 'nothing read for the implicit slot')
  const second = await c.acquire()
  t.equal(second.kind, 'explicit', 'the second concurrent holder reads')
  t.equal(pool.count(), 0)
  first.release()
  t.equal(pool.count(), 0, 'releasing the implicit slot writes nothing')
  const third = await c.acquire()
  t.equal(third.kind, 'implicit', 'the freed implicit slot is reused without a read')
  second.release()
  third.release()
  t.equal(pool.count(), 1)
})

t.test('a freed implicit slot goes to the first waiter', async (t) => {
  const pool = makePool(t, '')
  const c = open(t, pool.path, { implicitSlot: true })
  const implicit = await c.acquire()
  const waiting = c.acquire()
  t.equal(c.pending, 1)
  implicit.release()
  const next = await waiting
  t.equal(next.kind, 'implicit')
  t.equal(c.polling, false, 'nobody waits: no poll')
})

t.test('a waiting acquire is woken by a token another process writes, and only then polls', async (t) => {
  const pool = makePool(t, '')
  const c = open(t, pool.path)
  t.equal(c.polling, false, 'no poll before anyone waits')
  const p = c.acquire()
  t.equal(c.pending, 1)
  t.equal(c.polling, true, 'polling while a caller waits')
  const writer = start(t, 'sh', ['-c', `printf w > '${pool.path}'`])
  const tok = await p
  t.equal((await writer.exited).code, 0)
  t.equal(tok.kind === 'explicit' && String.fromCharCode(tok.byte), 'w')
  t.equal(c.polling, false, 'no poll once nobody waits: it never sits on a reservation')
  tok.release()
})

t.test('waiters are served first come, first served', async (t) => {
  const pool = makePool(t, '')
  const c = open(t, pool.path)
  const order: string[] = []
  const ps = ['first', 'second', 'third'].map((name) =>
    c.acquire().then((tok) => {
      order.push(`${name}:${tok.kind === 'explicit' ? String.fromCharCode(tok.byte) : '?'}`)
      return tok
    }),
  )
  pool.put('abc')
  const toks = await Promise.all(ps)
  t.same(order, ['first:a', 'second:b', 'third:c'])
  for (const tok of toks) tok.release()
})

t.test('abort: the waiting acquire rejects, stops polling and takes nothing', async (t) => {
  const pool = makePool(t, '')
  const c = open(t, pool.path)
  const ac = new AbortController()
  const p = c.acquire({ signal: ac.signal })
  t.equal(c.polling, true)
  ac.abort(new Error('changed my mind'))
  await t.rejects(p, { name: 'AbortError', code: 'ABORT_ERR' })
  t.equal(c.pending, 0)
  t.equal(c.polling, false)
  pool.put('z')
  await new Promise((r) => setImmediate(r))
  t.equal(pool.count(), 1, 'a token that arrives later stays in the pool')
  t.equal(c.held, 0)
})

t.test('abort with an already aborted signal reads nothing, even with tokens there', async (t) => {
  const pool = makePool(t, 'ab')
  const c = open(t, pool.path)
  await t.rejects(c.acquire({ signal: AbortSignal.abort() }), { code: 'ABORT_ERR' })
  t.equal(pool.count(), 2)
  t.equal(c.polling, false)
})

t.test('aborting one waiter leaves the others waiting', async (t) => {
  const pool = makePool(t, '')
  const c = open(t, pool.path)
  const ac = new AbortController()
  const a = c.acquire({ signal: ac.signal })
  const b = c.acquire()
  ac.abort()
  await t.rejects(a, { code: 'ABORT_ERR' })
  t.equal(c.pending, 1)
  t.equal(c.polling, true)
  pool.put('q')
  const tok = await b
  t.equal(tok.kind === 'explicit' && tok.byte, 'q'.charCodeAt(0))
  tok.release()
})

t.test('tryAcquire takes a token if one is there, never waits, never jumps the queue', async (t) => {
  const pool = makePool(t, 'a')
  const c = open(t, pool.path)
  const tok = c.tryAcquire()
  t.ok(tok, 'a token was there')
  t.equal(c.tryAcquire(), null, 'empty pool: null at once')
  const waiting = c.acquire()
  tok!.release()
  t.equal(c.tryAcquire(), null, 'a caller is waiting: tryAcquire does not take the token from it')
  const got = await waiting
  got.release()
})

t.test('withToken gives the token back when the function returns and when it throws', async (t) => {
  const pool = makePool(t, 'ab')
  const c = open(t, pool.path)
  const r = await c.withToken(async (tok) => {
    t.equal(pool.count(), 1, 'held while fn runs')
    t.equal(tok.kind, 'explicit')
    return 42
  })
  t.equal(r, 42)
  t.equal(pool.count(), 2)
  await t.rejects(
    c.withToken(() => {
      throw new Error('boom')
    }),
    { message: 'boom' },
  )
  t.equal(pool.count(), 2, 'given back after the throw')
  t.equal(c.held, 0)
})

t.test('close gives every token back, fails waiters, is idempotent', async (t) => {
  const pool = makePool(t, 'abc')
  const c = open(t, pool.path, { implicitSlot: true })
  const toks: Token[] = []
  for (let i = 0; i < 4; i++) toks.push(await c.acquire())
  t.equal(pool.count(), 0)
  const waiting = c.acquire()
  c.close()
  c.close()
  await t.rejects(waiting, { code: 'ERR_JOBSERVER_CLOSED' })
  t.equal(pool.count(), 3, 'the three bytes are back (the implicit slot had none)')
  t.equal(c.closed, true)
  t.equal(toks[1].released, true)
  t.equal(toks[1].release(), false, 'releasing after close does nothing')
  await t.rejects(c.acquire(), { code: 'ERR_JOBSERVER_CLOSED' })
  t.throws(() => c.tryAcquire(), { code: 'ERR_JOBSERVER_CLOSED' })
  t.equal(pool.count(), 3)
})

t.test('opening something that is not a jobserver fails with a code', async (t) => {
  t.throws(() => JobClient.open('/nonexistent/jobserver'), { code: 'ENOENT', syscall: 'stat' })
  t.throws(() => JobClient.open(__filename), { code: 'ERR_JOBSERVER_NOT_FIFO' }, 'a plain file on ext4')
  t.throws(() => JobClient.open('/'), { code: 'ERR_JOBSERVER_NOT_FIFO' }, 'a directory')
  t.throws(() => JobClient.open({ style: 'pipe', read: 987, write: 988 }), { code: 'ERR_JOBSERVER_BAD_FD' }, 'closed fds')
  t.throws(() => JobClient.open({ style: 'pipe', read: 0, write: 1 }), { code: 'ERR_JOBSERVER_BAD_FD' }, 'fds that are no pipe (make 4.3 stale numbers)')
  t.throws(() => JobClient.fromEnv({ env: {} }), { code: 'ERR_JOBSERVER_NO_ENV' })
  t.throws(() => JobClient.fromEnv({ env: { MAKEFLAGS: 'n --jobserver-auth=fifo:/x' } }), { code: 'ERR_JOBSERVER_NO_ENV' }, 'dry run')
  t.throws(
    () => JobClient.fromEnv({ env: { MAKEFLAGS: ' --jobserver-auth=3,4 --jobserver-auth=-2,-2' } }),
    { code: 'ERR_JOBSERVER_NO_ENV' },
    'invalidated by make',
  )
  t.throws(() => JobClient.fromEnv({ env: { MAKEFLAGS: '--jobserver-auth=x' } }), { code: 'ERR_JOBSERVER_BAD_AUTH' })
})

t.test('fromEnv finds the FIFO in MAKEFLAGS, else the first existing fallback path', async (t) => {
  const pool = makePool(t, 'a')
  const a = JobClient.fromEnv({ env: { MAKEFLAGS: ` -j4 --jobserver-auth=fifo:${pool.path}` }, handleSignals: false })
  t.teardown(() => a.close())
  t.same(a.auth, { style: 'fifo', path: pool.path })
  const b = JobClient.fromEnv({ env: {}, fallbackPaths: ['/nonexistent/a', pool.path], handleSignals: false })
  t.teardown(() => b.close())
  t.equal(b.path, pool.path)
  t.throws(() => JobClient.fromEnv({ env: {}, fallbackPaths: ['/nonexistent/a'] }), { code: 'ERR_JOBSERVER_NO_ENV' })
})

t.test('a pipe jobserver (R,W fds) is reopened privately, so the shared fds stay blocking', async (t) => {
  const fs = await import('node:fs')
  const pool = makePool(t, 'pq')
  // Two fds of this process on the FIFO stand in for make's inherited pipe ends.
  const r = fs.openSync(pool.path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  const w = fs.openSync(pool.path, fs.constants.O_WRONLY)
  t.teardown(() => {
    fs.closeSync(r)
    fs.closeSync(w)
  })
  const flags = (fd: number) => fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').match(/flags:\s+(\d+)/)![1]
  const wFlagsBefore = flags(w)
  const c = open(t, { style: 'pipe', read: r, write: w })
  t.not(c.readFd, r, 'a new fd for reads')
  t.not(c.writeFd, w, 'a new fd for writes')
  t.match(c.childAuth, { style: 'fifo', path: `/proc/${process.pid}/fd/${c.readFd}` }, 'children get a path to the same pipe')
  const tok = await c.acquire()
  t.equal(tok.kind === 'explicit' && String.fromCharCode(tok.byte), 'p')
  tok.release()
  t.equal(flags(w), wFlagsBefore, 'the inherited write fd is unchanged (no O_NONBLOCK forced on it)')
  t.equal(pool.drain(), 'qp')
})

// A fake native layer around the real one: scripted read results, to drive the rare paths
// (EINTR, sniped tokens, EOF) deterministically. The poll itself stays real.
function scriptedNative(script: number[]): Native & { reads: number } {
  const real = loadNative()
  const fake = {
    reads: 0,
    read(fd: number, buf: Buffer): number {
      fake.reads++
      const next = script.shift()
      return next === undefined ? real.read(fd, buf) : next
    },
    write: real.write,
    ioctl: real.ioctl,
    Poller: real.Poller,
  }
  return fake
}

t.test('EINTR and EAGAIN after a readable poll mean: poll again', async (t) => {
  const pool = makePool(t, 'k')
  const native = scriptedNative([-EINTR, -EAGAIN])
  const c = open(t, pool.path, { native })
  const tok = await c.acquire()
  t.equal(tok.kind === 'explicit' && String.fromCharCode(tok.byte), 'k', 'the third read got the token')
  t.equal(native.reads, 3, 'one read per readiness: interrupted, sniped, success')
  t.equal(pool.count(), 0)
  tok.release()
})

t.test('a read of 0 bytes (EOF) fails the waiters with ERR_JOBSERVER_EOF instead of spinning', async (t) => {
  const pool = makePool(t, 'k')
  const native = scriptedNative([0])
  const c = open(t, pool.path, { native })
  await t.rejects(c.acquire(), { code: 'ERR_JOBSERVER_EOF' })
  t.equal(native.reads, 1, 'it did not read again')
  t.equal(c.polling, false, 'and stopped polling')
})

t.test('another read error reaches the waiter as a Node-shaped system error', async (t) => {
  const pool = makePool(t, 'k')
  const c = open(t, pool.path, { native: scriptedNative([-os.constants.errno.EIO]) })
  await t.rejects(c.acquire(), { code: 'EIO', errno: -os.constants.errno.EIO, syscall: 'read', path: pool.path })
})

t.test('signals arriving while a process waits for a token do not disturb the wait', async (t) => {
  const pool = makePool(t, '')
  const child = start(t, process.execPath, [CLIENT, 'signals'], {
    env: { ...process.env, MAKEFLAGS: `--jobserver-auth=fifo:${pool.path}` },
  })
  await child.waitFor(/^waiting$/m)
  for (let k = 1; k <= 5; k++) {
    child.child.kill('SIGUSR1')
    await child.waitFor(new RegExp(`^usr1 ${k}$`, 'm'))
  }
  t.equal(pool.count(), 0)
  pool.put('s')
  await child.waitFor(/^got 115$/m)
  const done = await child.exited
  t.equal(done.code, 0, done.stderr)
  t.equal(pool.count(), 1, 'the token went back')
})

t.test('tokens held at the end of the process go back', async (t) => {
  type Case = [end: string, expect: { code: number | null; signal: NodeJS.Signals | null }, why: string]
  const cases: Case[] = [
    ['normal', { code: 0, signal: null }, 'the event loop runs dry'],
    ['exit', { code: 0, signal: null }, 'process.exit()'],
    ['throw', { code: 1, signal: null }, 'an uncaught exception'],
  ]
  for (const [end, expect, why] of cases) {
    const pool = makePool(t, 'abc')
    const child = start(t, process.execPath, [CLIENT, 'hold', '2', end], {
      env: { ...process.env, MAKEFLAGS: `--jobserver-auth=fifo:${pool.path}`, JOBCLIENT_TEST_IMPLICIT: '1' },
    })
    const done = await child.exited
    t.match(done.stdout, /^held implicit 97$/m, `${why}: held the implicit slot and one byte`)
    t.same({ code: done.code, signal: done.signal }, expect, `${why}: exit status`)
    t.equal(pool.count(), 3, `${why}: every token is back`)
  }
})

// Under tap, every child node process also carries tap's signal-exit listeners (NODE_OPTIONS
// --import of @tapjs/processinfo): this also checks that we and signal-exit do not each wait
// for the other to act, which would leave the process ignoring the signal.
t.test('SIGINT and SIGTERM: tokens go back and the process still dies by the signal', async (t) => {
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const pool = makePool(t, 'abc')
    const child = start(t, process.execPath, [CLIENT, 'hold', '3', 'wait'], {
      env: { ...process.env, MAKEFLAGS: `--jobserver-auth=fifo:${pool.path}` },
    })
    await child.waitFor(/^held 97 98 99$/m)
    t.equal(pool.count(), 0, `${signal}: all three held`)
    child.child.kill(signal)
    const done = await child.exited
    t.equal(done.signal, signal, `${signal}: died by the signal`)
    t.equal(pool.count(), 3, `${signal}: every token is back`)
  }
})

t.test('an application that handles SIGTERM itself keeps its tokens until it exits', async (t) => {
  const pool = makePool(t, 'ab')
  const child = start(t, process.execPath, [CLIENT, 'hold', '2', 'handler'], {
    env: { ...process.env, MAKEFLAGS: `--jobserver-auth=fifo:${pool.path}` },
  })
  await child.waitFor(/^held/m)
  child.child.kill('SIGTERM')
  await child.waitFor(/^caught$/m)
  t.equal(pool.count(), 0, 'still held: the application decides when to stop')
  child.child.kill('SIGUSR2')
  const done = await child.exited
  t.equal(done.code, 0)
  t.equal(pool.count(), 2, 'given back at exit')
})

t.test('SIGKILL: a plain FIFO loses the tokens (why steved reclaims by pid)', async (t) => {
  const pool = makePool(t, 'ab')
  const child = start(t, process.execPath, [CLIENT, 'hold', '2', 'wait'], {
    env: { ...process.env, MAKEFLAGS: `--jobserver-auth=fifo:${pool.path}` },
  })
  await child.waitFor(/^held/m)
  child.child.kill('SIGKILL')
  await child.exited
  t.equal(pool.count(), 0, 'nothing can run in a SIGKILLed process')
})

t.test('a client stays usable in a long loop and leaves the pool as it found it', async (t) => {
  const pool = makePool(t, 'abcd')
  const c = open(t, pool.path, { implicitSlot: true })
  for (let i = 0; i < 300; i++) {
    const toks = await Promise.all([c.acquire(), c.acquire(), c.acquire()])
    for (const tok of toks) tok.release()
  }
  await waitUntil(() => c.pending === 0, 'no waiters')
  t.equal(pool.count(), 4)
  t.equal(c.held, 0)
})
