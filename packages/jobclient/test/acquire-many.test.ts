// acquireMany(n): n tokens for a tool that runs n things at once. The strategy (client.ts,
// README): ask for all n; a partial set that stalls is given back, then a random back-off.
// These tests build the deadlock a naive "take them one by one" client falls into, on purpose.
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { JobClient } from '../dist/client'
import { start } from '../../../test/helpers/proc'
import { FIXTURES, makePool, waitUntil } from './helpers/pool'

const CLIENT = path.join(FIXTURES, 'client.js')

function open(t: Test, poolPath: string, implicitSlot = false): JobClient {
  const c = JobClient.open(poolPath, { handleSignals: false, implicitSlot })
  t.teardown(() => c.close())
  return c
}

t.test('n must be an integer >= 1', async (t) => {
  const pool = makePool(t, 'a')
  const c = open(t, pool.path)
  for (const n of [0, -1, 1.5, NaN]) await t.rejects(c.acquireMany(n), { code: 'ERR_JOBSERVER_INVALID_ARG' }, `n = ${n}`)
  t.equal(pool.count(), 1)
})

t.test('takes n tokens when they are there; the implicit slot counts as one', async (t) => {
  const pool = makePool(t, 'abc')
  const c = open(t, pool.path)
  const toks = await c.acquireMany(3)
  t.same(
    toks.map((x) => x.kind === 'explicit' && String.fromCharCode(x.byte)),
    ['a', 'b', 'c'],
  )
  for (const x of toks) x.release()
  const d = open(t, pool.path, true)
  const withImplicit = await d.acquireMany(3)
  t.same(
    withImplicit.map((x) => x.kind),
    ['implicit', 'explicit', 'explicit'],
  )
  t.equal(pool.count(), 1, 'only two bytes read')
  for (const x of withImplicit) x.release()
  t.equal(pool.count(), 3)
})

t.test('a partial set that stalls is given back (and taken again after the back-off)', async (t) => {
  const pool = makePool(t, 'ab')
  const c = open(t, pool.path)
  const ac = new AbortController()
  const p = c.acquireMany(3, { signal: ac.signal, stallMs: 20, maxBackoffMs: 20, random: () => 0.5 })
  p.catch(() => {})
  await waitUntil(() => pool.count() === 0, 'the two tokens taken')
  await waitUntil(() => pool.count() === 2, 'the partial set given back')
  await waitUntil(() => pool.count() === 0, 'taken again on the next attempt')
  ac.abort()
  await t.rejects(p, { code: 'ABORT_ERR' })
  t.equal(pool.count(), 2, 'abort leaves nothing held')
  t.equal(c.held, 0)
  t.equal(c.pending, 0)
  t.equal(c.polling, false)
})

t.test('abort while a partial set is held gives the partial set back', async (t) => {
  const pool = makePool(t, 'ab')
  const c = open(t, pool.path)
  const ac = new AbortController()
  const p = c.acquireMany(3, { signal: ac.signal, stallMs: 1e9 })
  await waitUntil(() => pool.count() === 0, 'the two tokens taken')
  t.equal(c.held, 2)
  ac.abort()
  await t.rejects(p, { name: 'AbortError' })
  t.equal(pool.count(), 2)
  t.equal(c.held, 0)
})

t.test('two processes each holding half of the pool and wanting 3 of 4 both finish', async (t) => {
  // Build the deadlock deterministically: A takes 2 of the 4 tokens and is stopped; B takes the
  // other 2; A resumes. Each holds 2, wants 3, and the pool is empty: one-by-one clients would
  // wait forever. The strategy makes one of them give its 2 back.
  const pool = makePool(t, 'ab')
  const env = { ...process.env, MAKEFLAGS: `--jobserver-auth=fifo:${pool.path}` }
  const a = start(t, process.execPath, [CLIENT, 'many', '3'], { env })
  await a.waitFor(/^waiting$/m)
  await waitUntil(() => pool.count() === 0, 'A to take two tokens')
  process.kill(a.pid, 'SIGSTOP')
  t.teardown(() => {
    if (a.child.exitCode === null && a.child.signalCode === null) process.kill(a.pid, 'SIGCONT')
  })
  pool.put('cd')
  const b = start(t, process.execPath, [CLIENT, 'many', '3'], { env })
  await b.waitFor(/^waiting$/m)
  await waitUntil(() => pool.count() === 0, 'B to take the other two')
  process.kill(a.pid, 'SIGCONT')
  const [da, db] = await Promise.all([a.exited, b.exited])
  t.equal(da.code, 0, `A: ${da.stderr}`)
  t.equal(db.code, 0, `B: ${db.stderr}`)
  t.match(da.stdout, /^got 3\ndone$/m, 'A got its three')
  t.match(db.stdout, /^got 3\ndone$/m, 'B got its three')
  t.equal(pool.count(), 4, 'all four tokens are back')
})

t.test('two clients in one process, each wanting 3 of 4, over and over', async (t) => {
  const pool = makePool(t, 'abcd')
  const a = open(t, pool.path)
  const b = open(t, pool.path)
  const rounds = async (c: JobClient) => {
    for (let i = 0; i < 20; i++) {
      const toks = await c.acquireMany(3, { stallMs: 10, maxBackoffMs: 100 })
      // Let the loop turn while holding them, so the other client's reads interleave.
      await new Promise((r) => setImmediate(r))
      for (const x of toks) x.release()
    }
    return 'finished'
  }
  t.same(await Promise.all([rounds(a), rounds(b)]), ['finished', 'finished'])
  t.equal(pool.count(), 4)
})
