// The boundary between the native session and the pool, with a recording stand-in for the
// addon: request translation (thread ids to processes, O_NONBLOCK per read, poll masks,
// errno values) and the CUSE start-up path, which cannot run on this kernel (the VM suite
// runs it for real).

import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import t, { type Test } from 'tap'

import { defaultConfig } from '../src/core'
import { createDaemon, mountPoints, pickTransport } from '../src/daemon'
import { ThreadMap } from '../src/io/procfs'
import { TokenServer } from '../src/io/server'
import { RequestKind, type Addon, type RequestCallback } from '../src/native'

class FakeSession {
  static last: FakeSession
  calls: Array<[string, ...unknown[]]> = []
  constructor(readonly cb: RequestCallback) {
    FakeSession.last = this
  }
  mountFile(...a: unknown[]) {
    this.calls.push(['mountFile', ...a])
    return 0
  }
  registerDevice(...a: unknown[]) {
    this.calls.push(['registerDevice', ...a])
    return 0
  }
  replyData(id: number, b: Buffer) {
    this.calls.push(['replyData', id, b.toString()])
    return 0
  }
  replyError(id: number, e: number) {
    this.calls.push(['replyError', id, e])
    return 0
  }
  replyWrite(id: number, n: number) {
    this.calls.push(['replyWrite', id, n])
    return 0
  }
  replyPoll(id: number, r: number) {
    this.calls.push(['replyPoll', id, r])
    return 0
  }
  replyIoctl(id: number, r: number) {
    this.calls.push(['replyIoctl', id, r])
    return 0
  }
  notifyPoll(fh: number) {
    this.calls.push(['notifyPoll', fh])
    return 0
  }
  close() {
    this.calls.push(['close'])
  }
}

const watched: number[] = []
const fakeAddon: Addon = {
  Session: FakeSession as unknown as Addon['Session'],
  FdPoll: class {
    close() {}
  } as unknown as Addon['FdPoll'],
  pidfdOpen: (pid: number) => {
    watched.push(pid)
    return 1000 + pid
  },
  umount: () => 0,
}

/** A /proc stand-in where thread 501 belongs to process 500. */
function fakeProc(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'steved-proc-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  for (const [tid, tgid] of [
    [500, 500],
    [501, 500],
    [600, 600],
  ]) {
    fs.mkdirSync(path.join(dir, String(tid)))
    fs.writeFileSync(path.join(dir, String(tid), 'status'), `Name:\tx\nTgid:\t${tgid}\nPid:\t${tid}\n`)
  }
  return dir
}


t.test('requests become pool inputs; effects become replies', async (t) => {
  const server = new TokenServer(defaultConfig(1), { addon: fakeAddon, threads: new ThreadMap(fakeProc(t)), now: () => 0 })
  const s = FakeSession.last
  const O_NONBLOCK = 0o4000
  s.cb(RequestKind.Open, 0, 1, 501, 0, 0, 0, 0)
  s.cb(RequestKind.Read, 10, 1, 501, 0, 0, 0, 4096)
  t.same(s.calls.pop(), ['replyData', 10, '+'], 'one byte for a 4096-byte read')
  t.match(server.snapshot().holders, [{ pid: 500, tokens: 1 }], 'thread 501 is process 500')
  s.cb(RequestKind.Read, 11, 1, 600, 0, 0, O_NONBLOCK, 1)
  t.same(s.calls.pop(), ['replyError', 11, os.constants.errno.EAGAIN], 'O_NONBLOCK in the read flags: EAGAIN')
  s.cb(RequestKind.Read, 12, 1, 600, 0, 0, 0, 1)
  t.equal(s.calls.length, 0, 'a blocking read is parked (no reply)')
  s.cb(RequestKind.Interrupt, 12, 0, 0, 0, 0, 0, 0)
  t.same(s.calls.pop(), ['replyError', 12, os.constants.errno.EINTR], 'interrupt answered with EINTR')
  s.cb(RequestKind.Poll, 13, 2, 600, 0, 0, 1, 1)
  t.same(s.calls.pop(), ['replyPoll', 13, 0x004 | 0x100], 'POLLOUT only while empty')
  s.cb(RequestKind.Write, 14, 1, 500, 0, 0, 0, 1)
  t.same(s.calls, [['replyWrite', 14, 1], ['notifyPoll', 2]], 'return, then the queued poller is notified')
  s.calls = []
  s.cb(RequestKind.Poll, 15, 2, 600, 0, 0, 1, 1)
  t.same(s.calls.pop(), ['replyPoll', 15, 0x001 | 0x004 | 0x040 | 0x100], 'POLLIN now: the token is reserved for it')
  s.cb(RequestKind.Write, 16, 1, 500, 0, 0, 0, 2)
  t.same(s.calls.pop(), ['replyError', 16, os.constants.errno.ENOSPC], 'ENOSPC for more than held')
  s.cb(RequestKind.Ioctl, 17, 1, 500, 0, 0, 0x1234, 0, Buffer.alloc(0))
  t.same(s.calls.pop(), ['replyError', 17, os.constants.errno.ENOTTY], 'unknown ioctl: ENOTTY')
  t.same(watched.slice(-2), [500, 600], 'each process is watched through a pidfd')
  server.close()
  server.close()
  t.same(s.calls.filter((c) => c[0] === 'close'), [['close']], 'close is idempotent')
})

t.test('the CUSE path registers /dev/<name> through /dev/cuse and fixes its permissions', async (t) => {
  const dev = fs.mkdtempSync(path.join(os.tmpdir(), 'steved-dev-'))
  t.teardown(() => fs.rmSync(dev, { recursive: true, force: true }))
  fs.writeFileSync(path.join(dev, 'cuse'), '')
  t.equal(pickTransport('auto', dev), 'cuse', 'auto picks CUSE where /dev/cuse exists')
  t.equal(pickTransport('auto', path.join(dev, 'none')), 'fuse')
  const d = createDaemon(
    { pool: defaultConfig(4), transport: 'auto', path: '/unused', devName: 'steve.test', mode: 0o660, group: '0', user: null, adminGroup: null },
    { addon: fakeAddon, devDir: dev },
  )
  const s = FakeSession.last
  const starting = d.start()
  t.same(s.calls[0], ['registerDevice', 'steve.test', path.join(dev, 'cuse')])
  // The kernel creates the node and finishes INIT.
  fs.writeFileSync(path.join(dev, 'steve.test'), '')
  s.cb(RequestKind.Ready, 0, 0, 0, 0, 0, 0, 0)
  const info = await starting
  t.same(info, { transport: 'cuse', path: path.join(dev, 'steve.test'), makeflags: `--jobserver-auth=fifo:${path.join(dev, 'steve.test')}` })
  t.equal(fs.statSync(path.join(dev, 'steve.test')).mode & 0o777, 0o660, '--mode applied to the device node')
  d.shutdown()
  t.same(s.calls.at(-1), ['close'])
})

t.test('CUSE refuses a device name that is already registered', async (t) => {
  const dev = fs.mkdtempSync(path.join(os.tmpdir(), 'steved-dev-'))
  t.teardown(() => fs.rmSync(dev, { recursive: true, force: true }))
  fs.writeFileSync(path.join(dev, 'cuse'), '')
  fs.writeFileSync(path.join(dev, 'steve'), '')
  const d = createDaemon(
    { pool: defaultConfig(1), transport: 'cuse', path: '/unused', devName: 'steve', mode: 0o666, group: null, user: null, adminGroup: null },
    { addon: fakeAddon, devDir: dev },
  )
  await t.rejects(d.start(), { code: 'ERR_STEVED_BUSY' })
})

t.test('mountinfo parsing undoes octal escapes', async (t) => {
  const mi = '36 35 0:33 / /run/my\\040dir/js rw,relatime - fuse.steved steved rw\n'
  t.ok(mountPoints(mi).has('/run/my dir/js'))
})

t.test('FUSE without /dev/fuse is a clear runtime error', async (t) => {
  const dev = fs.mkdtempSync(path.join(os.tmpdir(), 'steved-dev-'))
  t.teardown(() => fs.rmSync(dev, { recursive: true, force: true }))
  const d = createDaemon(
    { pool: defaultConfig(1), transport: 'fuse', path: path.join(dev, 'js'), devName: 'steve', mode: 0o666, group: null, user: null, adminGroup: null },
    { addon: fakeAddon, devDir: dev },
  )
  await t.rejects(d.start(), { code: 'ERR_STEVED_NO_DEVICE', message: /fuse does not exist/ })
  t.notOk(FakeSession.last.calls.some((c) => c[0] === 'mountFile'), 'nothing was mounted')
})
