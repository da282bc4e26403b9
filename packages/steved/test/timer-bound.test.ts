// The one timer of the token server (issue 14, item 3): Node runs a setTimeout longer than
// 2^31 - 1 ms (about 24.8 days) after 1 ms instead, so a long reservation expiry or load
// recheck once became a 1 kHz loop. The bounds on the settings keep such values out; the timer
// itself must still never be armed past the limit. The pool is handed absurd values directly
// here (it takes what it is given), with a recording stand-in for the native addon.

import t from 'tap'

import { defaultConfig, type Input } from '../src/core'
import { ThreadMap } from '../src/io/procfs'
import { TokenServer } from '../src/io/server'
import { RequestKind, type Addon, type RequestCallback } from '../src/native'

class FakeSession {
  static last: FakeSession
  constructor(readonly cb: RequestCallback) {
    FakeSession.last = this
  }
  mountFile = () => 0
  registerDevice = () => 0
  replyData = () => 0
  replyError = () => 0
  replyWrite = () => 0
  replyPoll = () => 0
  replyIoctl = () => 0
  notifyPoll = () => 0
  close() {}
}

const fakeAddon: Addon = {
  Session: FakeSession as unknown as Addon['Session'],
  FdPoll: class {
    close() {}
  } as unknown as Addon['FdPoll'],
  pidfdOpen: (pid: number) => 1000 + pid,
  umount: () => 0,
}

/** Count the ticks and overflow warnings while the server sits idle with its timer armed. */
async function idle(server: TokenServer, ms: number): Promise<{ ticks: number; warnings: number }> {
  let ticks = 0
  let warnings = 0
  const handle = server.pool.handle.bind(server.pool)
  server.pool.handle = (i: Input) => {
    if (i.kind === 'tick') ticks++
    return handle(i)
  }
  const onWarning = (w: Error) => {
    if (w.name === 'TimeoutOverflowWarning') warnings++
  }
  process.on('warning', onWarning)
  await new Promise((r) => setTimeout(r, ms))
  process.off('warning', onWarning)
  return { ticks, warnings }
}

t.test('a reservation expiring in 35 days arms no timer loop', async (t) => {
  const cfg = { ...defaultConfig(2), reservationExpiryMs: 3_000_000_000 }
  const server = new TokenServer(cfg, { addon: fakeAddon, threads: new ThreadMap('/nonexistent'), now: () => performance.now() })
  t.teardown(() => server.close())
  const s = FakeSession.last
  s.cb(RequestKind.Open, 0, 1, 700, 0, 0, 0, 0)
  s.cb(RequestKind.Poll, 1, 1, 700, 0, 0, 1, 1)
  t.equal(server.snapshot().reserved, 1, 'the poller holds a reservation')
  const r = await idle(server, 200)
  t.same(r, { ticks: 0, warnings: 0 }, 'no tick and no TimeoutOverflowWarning while it lasts')
  t.equal(server.snapshot().reserved, 1, 'and the reservation is still there')
})

t.test('a load recheck every 35 days arms no timer loop', async (t) => {
  const cfg = { ...defaultConfig(2), loadAverage: 1, loadRecheckMs: 3_000_000_000 }
  const server = new TokenServer(cfg, {
    addon: fakeAddon,
    threads: new ThreadMap('/nonexistent'),
    now: () => performance.now(),
    sample: () => ({ load1: 50, memAvailMiB: 1e6 }),
  })
  t.teardown(() => server.close())
  const s = FakeSession.last
  s.cb(RequestKind.Open, 0, 1, 700, 0, 0, 0, 0)
  s.cb(RequestKind.Read, 1, 1, 700, 0, 0, 0, 1)
  s.cb(RequestKind.Open, 0, 2, 701, 0, 0, 0, 0)
  s.cb(RequestKind.Read, 2, 2, 701, 0, 0, 0, 1)
  t.match(server.snapshot().waiters, [{ pid: 701, reason: 'load' }], 'a reader waits on the load')
  const r = await idle(server, 200)
  t.same(r, { ticks: 0, warnings: 0 }, 'no tick and no TimeoutOverflowWarning while it waits')
})
