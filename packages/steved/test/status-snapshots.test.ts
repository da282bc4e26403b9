// The status snapshot store behind STEVED_IOC_STATUS (issue 14, item 1), as pure logic: the
// control plane on its own (status chunks are answered without the pool; it needs only a
// clock-free status text, and is told of exits). Many readers that never finish, from one user or many,
// must not grow the store past its caps, and a reader that does finish always reassembles
// exactly the document it started (or is told ESTALE and starts over).

import * as os from 'node:os'
import t from 'tap'

import { STATUS_CHUNK_SIZE, STATUS_HEADER, STEVED_IOC_STATUS } from '../src/control/protocol'
import { STATUS_SNAPSHOTS_PER_UID, STATUS_SNAPSHOT_BYTES, StatusSnapshots, controlPlane } from '../src/control/server'

const E = os.constants.errno

function setup(docSize: (i: number) => number) {
  let version = 0
  let built = 0
  const snapshots = new StatusSnapshots()
  const plane = controlPlane({
    adminGid: () => null,
    snapshots,
    statusJson: () => {
      built++
      const v = version++
      return JSON.stringify({ v, pad: String(v % 10).repeat(docSize(v)) })
    },
  })
  const chunk = (pid: number, uid: number, offset: number) => {
    const input = Buffer.alloc(STATUS_CHUNK_SIZE)
    input.writeUInt32LE(offset, 0)
    const r = plane.decode({ cmd: STEVED_IOC_STATUS, pid, uid, gid: uid, input, outSize: STATUS_CHUNK_SIZE })
    if ('errno' in r) return { errno: r.errno }
    if (!('result' in r)) throw new Error('a status chunk went to the pool')
    const total = r.data!.readUInt32LE(0)
    const n = r.data!.readUInt32LE(4)
    return { total, bytes: r.data!.subarray(STATUS_HEADER, STATUS_HEADER + n) }
  }
  return { snapshots, chunk, exit: (pid: number) => plane.exited(pid), built: () => built }
}

t.test('readers that stop after chunk 0 are capped per uid and in bytes, however many there are', async (t) => {
  for (const n of [10, 1000, 20000]) {
    const s = setup(() => 20000)
    let served = 0
    for (let i = 0; i < n; i++) if (s.chunk(10000 + i, 1000, 0).total! > 20000) served++
    t.equal(served, n, `${n} readers of one uid all got chunk 0`)
    t.ok(s.snapshots.count <= STATUS_SNAPSHOTS_PER_UID, `${n} readers of one uid: ${s.snapshots.count} snapshots kept`)
    t.equal(s.built(), n, 'one document built per chunk-0 request, nothing more')
  }
  const many = setup(() => 1024 * 1024)
  for (let uid = 1; uid <= 200; uid++) many.chunk(uid, uid, 0)
  t.ok(many.snapshots.bytes <= STATUS_SNAPSHOT_BYTES, `200 uids with a 1 MiB document each: ${many.snapshots.bytes} bytes kept`)
  t.ok(many.snapshots.count <= STATUS_SNAPSHOT_BYTES / (1024 * 1024))
  for (let uid = 1; uid <= 200; uid++) many.exit(uid)
  t.same([many.snapshots.count, many.snapshots.bytes], [0, 0], 'exits drop them all')
})

t.test('a dropped reader is told ESTALE; finishing a read frees its snapshot', async (t) => {
  const s = setup(() => 30000)
  const first = s.chunk(1, 500, 0)
  for (let pid = 2; pid <= STATUS_SNAPSHOTS_PER_UID + 1; pid++) s.chunk(pid, 500, 0)
  t.same(s.chunk(1, 500, first.bytes!.length), { errno: E.ESTALE }, 'the oldest read of the uid was dropped')
  t.same(s.chunk(99, 500, 100), { errno: E.ESTALE }, 'a chunk past 0 without a snapshot')
  const other = s.chunk(7, 600, 0)
  t.ok(other.total, "another uid's read is not affected by this uid's cap")
  let offset = other.bytes!.length
  while (offset < other.total!) offset += s.chunk(7, 600, offset).bytes!.length
  t.equal(s.snapshots.count, STATUS_SNAPSHOTS_PER_UID, 'the finished read left the store')
})

// Random interleavings of starts, continuations, abandoned reads and exits from a few uids:
// the caps hold after every step and every completed read is one whole document.
t.test('model: random readers never break the caps and always reassemble one document', async (t) => {
  let seed = 14
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  const s = setup((v) => 1000 + (v % 7) * 9000)
  const reading = new Map<number, { uid: number; parts: Buffer[]; offset: number; total: number }>()
  let completed = 0
  let stale = 0
  for (let step = 0; step < 20000; step++) {
    const pid = 1 + rand(60)
    const uid = pid % 3
    const r = reading.get(pid)
    const op = rand(10)
    if (op === 0) {
      s.exit(pid)
      reading.delete(pid)
    } else if (!r || op === 1) {
      const c = s.chunk(pid, uid, 0)
      reading.set(pid, { uid, parts: [c.bytes!], offset: c.bytes!.length, total: c.total! })
    } else {
      const c = s.chunk(pid, r.uid, r.offset)
      if ('errno' in c) {
        if (c.errno !== E.ESTALE) t.fail(`errno ${c.errno}`)
        stale++
        reading.delete(pid)
      } else {
        r.parts.push(c.bytes!)
        r.offset += c.bytes!.length
        if (r.offset >= r.total) {
          const doc = JSON.parse(Buffer.concat(r.parts).toString('utf8')) as { v: number; pad: string }
          if (doc.pad !== String(doc.v % 10).repeat(1000 + (doc.v % 7) * 9000)) t.fail(`read ${pid} reassembled a mixed document`)
          completed++
          reading.delete(pid)
        }
      }
    }
    if (s.snapshots.bytes > STATUS_SNAPSHOT_BYTES || s.snapshots.count > 3 * STATUS_SNAPSHOTS_PER_UID) t.fail(`step ${step}: caps broken`)
  }
  t.ok(completed > 1000, `${completed} reads completed, ${stale} told to start over`)
})
