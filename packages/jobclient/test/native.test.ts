// The native layer against real FIFOs: each function is one syscall that returns >= 0 or
// -errno, the Poller's lifetime is explicit (close twice, close while polling, GC while
// polling), and opening and closing clients leaks no fd.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import t from 'tap'
import { JobClient } from '../dist/client'
import { systemError } from '../dist/errors'
import { FIONREAD, loadNative, UV_READABLE } from '../dist/native'
import { FIXTURES, makePool, tmpDir } from './helpers/pool'

const native = loadNative()
const { EAGAIN, EBADF, ENOTTY } = os.constants.errno

t.test('read and write move one byte and return -errno on failure', async (t) => {
  const pool = makePool(t, '')
  const buf = Buffer.alloc(1)
  t.equal(native.read(pool.fd, buf), -EAGAIN, 'empty non-blocking FIFO: -EAGAIN')
  t.equal(native.write(pool.fd, Buffer.from('q')), 1, 'write returns the byte count')
  t.equal(pool.count(), 1)
  t.equal(native.read(pool.fd, buf), 1, 'read returns the byte count')
  t.equal(buf.toString(), 'q', 'the byte that was written')
  t.equal(native.read(-1, buf), -EBADF, 'bad fd: -EBADF')
  t.equal(native.write(-1, buf), -EBADF, 'bad fd: -EBADF')
  t.throws(() => native.read('x' as unknown as number, buf), TypeError, 'wrong argument types throw TypeError')
  t.throws(() => native.write(pool.fd, 'x' as unknown as Buffer), TypeError)
})

t.test('ioctl passes a Buffer as a pointer and returns -errno', async (t) => {
  const pool = makePool(t, 'abc')
  const n = Buffer.alloc(4)
  t.equal(native.ioctl(pool.fd, FIONREAD, n), 0)
  t.equal(n.readInt32LE(0), 3, 'FIONREAD wrote the byte count into the buffer')
  t.equal(native.ioctl(-1, FIONREAD, n), -EBADF)
  t.equal(native.ioctl(pool.fd, 0x5401 /* TCGETS */, Buffer.alloc(64)), -ENOTTY, 'a FIFO is no terminal: -ENOTTY')
  t.equal(native.ioctl(pool.fd, 0x5401, 0), -ENOTTY, 'an integer argument reaches the kernel too')
  t.throws(() => native.ioctl(pool.fd, FIONREAD, 'x' as unknown as Buffer), TypeError)
})

t.test('systemError is shaped like the errors Node itself throws', async (t) => {
  const pool = makePool(t, '')
  let nodeError: NodeJS.ErrnoException | undefined
  try {
    fs.readSync(pool.fd, Buffer.alloc(1))
  } catch (e) {
    nodeError = e as NodeJS.ErrnoException
  }
  const ours = systemError(native.read(pool.fd, Buffer.alloc(1)), 'read', pool.path)
  t.ok(nodeError, 'Node threw for the same read')
  t.equal(ours.code, nodeError!.code, 'code')
  t.equal(ours.errno, nodeError!.errno, 'negative errno')
  t.equal(ours.syscall, nodeError!.syscall, 'syscall')
  t.equal(ours.path, pool.path)
  t.ok(ours instanceof Error)
})

t.test('Poller reports readability until stopped, and close is idempotent', async (t) => {
  const pool = makePool(t, '')
  const events: Array<[number, number]> = []
  let wake: () => void = () => {}
  const p = new native.Poller(pool.fd, (status, ev) => {
    events.push([status, ev])
    wake()
  })
  t.teardown(() => p.close())
  t.equal(p.start(), 0)
  t.equal(p.start(), 0, 'start twice is fine')
  pool.put('x')
  await new Promise<void>((r) => (wake = r))
  t.same(events[0], [0, UV_READABLE], 'status 0, readable')
  t.equal(p.stop(), 0)
  const seen = events.length
  // Level-triggered and still readable: were it not stopped, it would fire on the next turn.
  await new Promise((r) => setImmediate(r))
  await new Promise((r) => setImmediate(r))
  t.equal(events.length, seen, 'no event after stop()')
  p.close()
  p.close()
  t.ok(p.start() < 0, 'start() after close() returns -errno')
  t.equal(p.stop(), 0, 'stop() after close() is a no-op')
})

t.test('closing while polling: no callback afterwards, the fd can be closed at once', async (t) => {
  const pool = makePool(t, '')
  const fd = fs.openSync(pool.path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
  let calls = 0
  const p = new native.Poller(fd, () => calls++)
  t.equal(p.start(), 0)
  p.close()
  fs.closeSync(fd)
  pool.put('x')
  await new Promise((r) => setTimeout(r, 20))
  await new Promise((r) => setImmediate(r))
  t.equal(calls, 0)
})

t.test('a Poller on a file epoll cannot watch fails in start() with -errno', async (t) => {
  const dir = tmpDir(t)
  const file = path.join(dir, 'plain')
  fs.writeFileSync(file, 'x')
  const fd = fs.openSync(file, 'r')
  t.teardown(() => fs.closeSync(fd))
  const p = new native.Poller(fd, () => {})
  t.teardown(() => p.close())
  t.equal(p.start(), -os.constants.errno.EPERM, 'ext4 regular file: -EPERM from epoll')
})

t.test('a started Poller survives garbage collection', async (t) => {
  const pool = makePool(t, '')
  const r = spawnSync(process.execPath, ['--expose-gc', path.join(FIXTURES, 'gc-poller.js'), pool.path], {
    encoding: 'utf8',
    timeout: 30000,
  })
  t.equal(r.status, 0, r.stderr)
  t.equal(r.stdout, 'readable 0\n')
})

t.test('opening and closing clients leaks no fd', async (t) => {
  const pool = makePool(t, 'ab')
  const fds = () => fs.readdirSync('/proc/self/fd').length
  const before = fds()
  for (let i = 0; i < 200; i++) {
    const c = JobClient.open(pool.path)
    const tok = await c.acquire()
    if (i % 2 === 0) tok.release()
    c.close()
    c.close()
  }
  t.equal(fds(), before, 'fd count back to where it was')
  t.equal(pool.count(), 2, 'every token came back')
})
