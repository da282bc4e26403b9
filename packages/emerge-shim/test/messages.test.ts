// The einfo words, from steved's status document: which jobserver, and why a job waits.
import t from 'tap'
import { describeJobserver, waitReason } from '../dist/messages'
import { encode, parseReply, parseRequest } from '../dist/protocol'
import type { StevedStatus } from '../dist/steved-control'

type Reason = StevedStatus['waiters'][number]['reason']
const server = (version: string, transport: 'fuse' | 'cuse', path: string): StevedStatus['server'] =>
  ({ pid: 1, version, transport, path, startedAt: '2026-01-01T00:00:00Z', adminGroup: null, uptimeSeconds: 1, statusSnapshots: { count: 0, bytes: 0 } })

function status(over: Partial<StevedStatus> = {}): StevedStatus {
  return {
    version: 1,
    time: '2026-01-01T00:00:01Z',
    server: server('0.1.0', 'fuse', '/run/steved/jobserver'),
    pool: { jobs: 8, free: 0, held: 8, reserved: 0, waiting: 2 },
    settings: { jobs: 8, minJobs: 1, loadAverage: 12, loadRecheckSeconds: 0.5, minMemoryAvailMiB: 2048, perProcessLimit: 4, reservationExpirySeconds: 1, maxCpuPressure: null, maxMemoryPressure: null, maxIoPressure: null },
    lastSample: { load1: 15.5, memAvailMiB: 900, pressure: null, ageSeconds: 0 },
    holders: [
      { pid: 10, cmdline: 'make', tokens: 5, heldForSeconds: [] },
      { pid: 11, cmdline: 'cargo', tokens: 3, heldForSeconds: [] },
    ],
    waiters: [
      { pid: 20, cmdline: 'make', how: 'poll', waitingForSeconds: 1, reason: 'no-tokens' },
      { pid: 21, cmdline: 'make', how: 'read', waitingForSeconds: 1, reason: 'no-tokens' },
    ],
    reservations: [],
    groups: [],
    counters: { granted: 0, returned: 0, reclaimed: 0, enospc: 0, interrupts: 0, eagain: 0, reservationsExpired: 0, peakHolders: 0, secondsAtZeroFree: 0 },
    ...over,
  }
}

t.test('describeJobserver', async (t) => {
  t.equal(describeJobserver(status(), '/run/steved/jobserver'), 'steved 0.1.0 at /run/steved/jobserver (FUSE file, 8 tokens)')
  t.equal(describeJobserver(status({ server: server('0.2.0', 'cuse', '/dev/steve'), pool: { jobs: 1, free: 0, held: 1, reserved: 0, waiting: 0 } }), '/dev/steve'), 'steved 0.2.0 at /dev/steve (CUSE device, 1 token)')
  t.equal(describeJobserver(null, '/tmp/fifo'), 'the jobserver at /tmp/fifo (not steved)')
})

t.test('waitReason: steved reason of this waiter, and who else waits', async (t) => {
  const w = (reason: Reason) => status({ waiters: [{ pid: 20, cmdline: 'make', how: 'poll', waitingForSeconds: 1, reason }, { pid: 21, cmdline: 'make', how: 'read', waitingForSeconds: 1, reason: 'no-tokens' }] })
  t.equal(waitReason(w('no-tokens'), 20, 'p'), 'all 8 tokens are in use (held by 2 processes); 1 other client waiting too')
  t.equal(waitReason(w('load'), 20, 'p'), 'steved grants no token while the load average (15.5) is above its limit (12); 1 other client waiting too')
  t.equal(waitReason(w('memory'), 20, 'p'), 'steved grants no token while MemAvailable (900 MiB) is below its floor (2048 MiB); 1 other client waiting too')
  t.equal(waitReason(w('per-process-limit'), 20, 'p'), "this holder is at steved's per-process limit (4); 1 other client waiting too")
  t.equal(waitReason(w('group-limit'), 20, 'p'), "this build's group is at its token limit; 1 other client waiting too")
  t.equal(waitReason(status({ pool: { jobs: 1, free: 0, held: 1, reserved: 0, waiting: 1 }, holders: [{ pid: 10, cmdline: 'x', tokens: 1, heldForSeconds: [] }], waiters: [] }), 20, 'p'), 'the only token is in use (held by 1 process)', 'not listed yet: no tokens')
  t.equal(waitReason(null, 20, '/tmp/fifo'), 'no token is free at /tmp/fifo')
})

t.test('the holder protocol: requests are checked, errors carry ERR_SHIM_PROTOCOL', async (t) => {
  t.same(parseRequest(encode({ v: 1, op: 'attach', pid: 5, start: 77, phase: 'compile' })), { v: 1, op: 'attach', pid: 5, start: 77, phase: 'compile' })
  t.same(parseRequest('{"v":1,"op":"end","reason":"failed","pid":9}'), { v: 1, op: 'end', reason: 'failed', pid: 9 })
  t.same(parseRequest('{"v":1,"op":"status","extra":1}'), { v: 1, op: 'status' })
  t.same(parseRequest(encode({ v: 1, op: 'join', pid: 8, start: 90, phase: 'unpack' })), { v: 1, op: 'join', pid: 8, start: 90, phase: 'unpack' })
  for (const bad of ['', 'nope', '{"v":2,"op":"status"}', '{"v":1,"op":"attach","pid":-1,"start":1,"phase":"x"}', '{"v":1,"op":"end","reason":"maybe","pid":1}', '{"v":1,"op":"join","pid":8,"phase":"x"}', '{"v":1,"op":"join","pid":1.5,"start":1,"phase":"x"}', '{"v":1,"op":"fly"}', 'null']) {
    t.throws(() => parseRequest(bad), { code: 'ERR_SHIM_PROTOCOL' }, JSON.stringify(bad))
  }
  t.same(parseReply('{"type":"ending","waitingFor":2}'), { type: 'ending', waitingFor: 2 })
  t.same(parseReply('{"type":"joined","group":"app-misc/x-1","limit":3}'), { type: 'joined', group: 'app-misc/x-1', limit: 3 })
  t.throws(() => parseReply('{"type":"party"}'), { code: 'ERR_SHIM_PROTOCOL' })
})
