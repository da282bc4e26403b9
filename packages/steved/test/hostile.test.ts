// Hostile and odd input on a real FUSE mount (issue 10): sizes, directions and flags no real
// client uses, ioctls steved does not know, seeks, mmap, file operations, descriptor
// exhaustion, a client that opens and never reads. Each gets the answer documented in
// docs/protocol.md, and after each one a normal client still gets a token and the pool is
// whole. One steved serves every case, so "keeps serving others" is tested across all of them.

import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'

import { run, start } from '../../../test/helpers/proc'
import { startSteved, waitForStatus, type RunningSteved, poolWhole } from '../../../test/helpers/steved'
import type { Status } from 'jobclient'

const CLIENTS = path.join(__dirname, 'clients')
const JOBS = 2

/** Run a hostile case to its end; returns its "name answer" lines as a map. */
async function hostile(t: Test, s: RunningSteved, c: string, ...args: string[]): Promise<Map<string, string>> {
  const r = await run('python3', [path.join(CLIENTS, 'hostile.py'), s.path, c, ...args], { timeoutMs: 30000 })
  t.equal(r.code, 0, `${c} ran to its end ${r.stderr}`)
  return answers(r.stdout)
}

function answers(stdout: string): Map<string, string> {
  const m = new Map<string, string>()
  for (const line of stdout.split('\n')) {
    const i = line.indexOf(' ')
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1))
  }
  return m
}

const whole = (r: Status): boolean => r.pool.jobs === JOBS && poolWhole(r)

/** A normal client still gets a token (exactly one byte) and gives it back; the pool is whole. */
async function stillServes(t: Test, s: RunningSteved): Promise<Status> {
  const r = await run('python3', [path.join(CLIENTS, 'jsclient.py'), s.path, 'bigread'], { timeoutMs: 20000 })
  t.match(r.stdout, /^len 1$/m, 'a normal client still gets one token')
  return waitForStatus(s, whole, 'the pool whole again')
}

const fdCount = (pid: number): number => fs.readdirSync(`/proc/${pid}/fd`).length

t.test('hostile and odd input', async (t) => {
  const s = await startSteved(t, { jobs: JOBS, args: ['-d'] })
  const baseFds = fdCount(s.pid)

  t.test('reads of size 0, 1 and 1 MiB, and a readv whose first buffer is empty', async (t) => {
    const before = (await s.status()).counters
    const a = await hostile(t, s, 'read-sizes')
    t.equal(a.get('read0'), '0', 'a zero-size read returns 0 bytes')
    t.equal(a.get('read1'), "b'+'", 'a 1-byte read gets one token byte')
    t.equal(a.get('read1MiB'), "b'+'", 'a 1 MiB read gets exactly one byte')
    t.equal(a.get('readv-0-4096'), "1 b'+\\x00'", 'readv fills one byte of the first non-empty buffer')
    t.equal(a.get('write2'), '2')
    t.equal(a.get('write0'), '0', 'a zero-size write returns 0')
    const c = (await stillServes(t, s)).counters
    t.equal(c.granted - before.granted, 4, 'three reads and the readv took one token each, the empty read none')
  })

  t.test('a zero-size read never reaches steved and takes no token', async (t) => {
    const before = (await s.status()).counters
    const a = await hostile(t, s, 'zero-read')
    t.equal(a.get('read0'), '0')
    // steved -d logs every read request it receives, with the caller's pid.
    t.notMatch(s.stderr(), new RegExp(`read req=\\d+ fh=\\d+ tid=\\d+ pid=${a.get('pid')}\\b`), 'no READ request from that process')
    const c = (await stillServes(t, s)).counters
    t.equal(c.granted - before.granted, 1, 'only the normal client was granted a token')
    t.match(s.stderr(), /read req=\d+ fh=\d+ tid=\d+ pid=\d+/, 'steved -d does log read requests (so the check above can fail)')
  })

  t.test('writes of many bytes: all or nothing, ENOSPC when more than held', async (t) => {
    const before = (await s.status()).counters
    const a = await hostile(t, s, 'writes')
    t.equal(a.get('write2-holding2'), '2', 'two tokens returned in one write')
    t.equal(a.get('write100-holding0'), 'ENOSPC')
    t.equal(a.get('write2-holding1'), 'ENOSPC', 'nothing is taken from an over-long write')
    t.equal(a.get('write1MiB-holding1'), 'ENOSPC', '1 MiB (split by the kernel at max_write) is refused at its first chunk')
    t.equal(a.get('write1-holding1'), '1', 'the token it still held returns (any byte value)')
    const c = (await stillServes(t, s)).counters
    t.equal(c.enospc - before.enospc, 3)
    t.equal(c.reclaimed - before.reclaimed, 0, 'nothing left to reclaim: the client returned all it held')
  })

  t.test('bytes from a process that never read: one early return, then ENOSPC; never beyond jobs free; gone at exit', async (t) => {
    // A parent holds a token; a process that never read returns one early (the nasm-rs pattern).
    const h = start(t, 'bash', ['-c', 'exec 3<"$1"; read -r -N1 -u3 x && echo got && exec sleep 60', 'holder', s.path])
    await h.waitFor(/^got$/m)
    const c = start(t, 'python3', [path.join(CLIENTS, 'hostile.py'), s.path, 'never-read', '60'])
    await c.waitFor(/^wrote$/m)
    const a = answers(c.output())
    t.equal(a.get('first'), '1', 'the one early return is accepted')
    t.equal(a.get('second'), 'ENOSPC')
    t.equal((await s.status()).pool.free, JOBS, 'it is in the pool: one out, one handed back')
    c.child.kill('SIGKILL')
    await c.exited
    await waitForStatus(s, (r) => r.pool.free === JOBS - 1, 'the early return gone with its process')
    h.child.kill('SIGKILL')
    await h.exited
    await stillServes(t, s)
    // With every token free, an early return is accepted but the pool stays at jobs.
    const d = start(t, 'python3', [path.join(CLIENTS, 'hostile.py'), s.path, 'never-read', '60'])
    await d.waitFor(/^wrote$/m)
    t.equal(answers(d.output()).get('first'), '1', 'accepted on an idle pool too')
    t.equal((await s.status()).pool.free, JOBS, 'but the pool does not grow past jobs')
    d.child.kill('SIGKILL')
    await d.exited
    await stillServes(t, s)
  })

  t.test('a write on an O_RDONLY descriptor and a read on an O_WRONLY one: EBADF from the kernel', async (t) => {
    const before = (await s.status()).counters
    const a = await hostile(t, s, 'wrong-direction')
    t.equal(a.get('write-on-O_RDONLY'), 'EBADF')
    t.equal(a.get('read-on-O_WRONLY'), 'EBADF')
    const c = (await stillServes(t, s)).counters
    t.equal(c.enospc, before.enospc, 'steved never saw the write')
    t.equal(c.granted - before.granted, 1, 'nor the read')
  })

  t.test('unknown ioctls and ioctls with bad sizes or pointers', async (t) => {
    const a = await hostile(t, s, 'ioctls')
    t.equal(a.get('unknown-0x1234'), 'ENOTTY')
    t.equal(a.get('TCGETS'), 'ENOTTY', 'not a terminal')
    t.equal(a.get('none-dir-j-0x55'), 'ENOTTY', "steved's ioctl type 'j', no direction, unknown number")
    t.equal(a.get('GET-with-size-8'), 'ENOTTY', 'a known number with another size is another command')
    t.equal(a.get('RW-size-16383'), 'ENOTTY', 'the largest encodable size reaches steved and is refused')
    t.equal(a.get('GET-unknown-key'), 'EINVAL', 'STEVED_IOC_GET of a setting that does not exist')
    t.equal(a.get('GET-NULL-pointer'), 'EFAULT', 'the kernel cannot copy from NULL')
    t.equal(a.get('GET-bad-pointer'), 'EFAULT')
    t.equal(a.get('FIONREAD'), '0', 'FIONREAD is answered by the VFS from the file size (0), never by steved')
    t.equal(a.get('FIONBIO'), '0', 'FIONBIO sets O_NONBLOCK on the open file')
    t.equal(a.get('after-FIONBIO'), `drained ${JOBS} then EAGAIN`, 'and steved honours it per read')
    await stillServes(t, s)
  })

  t.test('opens with O_TRUNC, O_APPEND, O_CREAT work; O_EXCL and O_DIRECTORY fail', async (t) => {
    const a = await hostile(t, s, 'open-flags')
    t.equal(a.get('O_RDWR|O_TRUNC'), 'ok', 'O_TRUNC is accepted and truncates nothing')
    t.equal(a.get('O_RDWR|O_APPEND'), 'ok')
    t.equal(a.get('O_RDWR|O_CREAT'), 'ok')
    t.equal(a.get('O_WRONLY|O_CREAT|O_EXCL'), 'EEXIST')
    t.equal(a.get('O_RDONLY|O_DIRECTORY'), 'ENOTDIR')
    t.equal(a.get('PATH/x'), 'ENOTDIR')
    t.equal(a.get('size-after'), '0')
    await stillServes(t, s)
  })

  t.test('seeks: the file is not seekable (ESPIPE)', async (t) => {
    const a = await hostile(t, s, 'seeks')
    for (const k of ['lseek-SET', 'lseek-END', 'pread', 'pwrite']) t.equal(a.get(k), 'ESPIPE', k)
    await stillServes(t, s)
  })

  t.test('mmap: MAP_SHARED is refused, a private map of the empty file faults (SIGBUS)', async (t) => {
    const before = (await s.status()).counters
    const a = await hostile(t, s, 'mmap')
    t.equal(a.get('mmap-MAP_SHARED'), 'ENODEV', 'direct_io files cannot be shared-mapped')
    t.equal(a.get('mmap-MAP_PRIVATE'), 'mapped')
    t.equal(a.get('touch-private-page'), 'signal SIGBUS', 'the page lies beyond the end of a 0-byte file')
    const c = (await stillServes(t, s)).counters
    t.equal(c.granted - before.granted, 1, 'no token went to a page fault')
  })

  t.test('file operations on the jobserver path change nothing', async (t) => {
    const a = await hostile(t, s, 'file-ops')
    t.equal(a.get('chmod-0600'), 'ok', 'chmod is accepted...')
    t.equal(a.get('mode-after'), '0o666', '...and ignored: the mode is steved --mode')
    t.equal(a.get('truncate-5'), 'ok')
    t.equal(a.get('size-after'), '0')
    t.equal(a.get('utime'), 'ok')
    t.equal(a.get('unlink'), 'EBUSY', 'a mount point cannot be removed')
    t.equal(a.get('rename'), 'EBUSY')
    t.equal(a.get('link'), 'EXDEV')
    t.equal(a.get('setxattr'), 'ENOTSUP')
    t.equal(a.get('listdir'), 'ENOTDIR')
    t.equal(a.get('fsync'), 'ok', 'fsync: ENOSYS from libfuse, which the kernel turns into success')
    t.equal(a.get('ftruncate'), 'ok')
    t.ok(fs.statSync(s.path).isFile(), 'the jobserver is still there')
    await stillServes(t, s)
  })

  t.test('a client opening the jobserver until EMFILE: others are served meanwhile, all released at its death', async (t) => {
    const before = (await s.status()).counters
    const c = start(t, 'python3', [path.join(CLIENTS, 'hostile.py'), s.path, 'emfile', '512', '60'])
    await c.waitFor(/^holding-fds$/m)
    const a = answers(c.output())
    t.match(a.get('opened'), /^\d+ then EMFILE$/, `opened ${a.get('opened')}`)
    t.ok(Number(a.get('opened')!.split(' ')[0]) >= 500, 'it really opened hundreds of files')
    t.equal(a.get('token'), "b'+'", 'it can still use them')
    await stillServes(t, s)
    c.child.kill('SIGKILL')
    await c.exited
    const r = await stillServes(t, s)
    t.equal(r.counters.reclaimed, before.reclaimed, 'it held nothing at its death')
    await waitForFds(s.pid, baseFds)
    t.equal(fdCount(s.pid), baseFds, "steved's descriptors are back to where they were (client opens cost it none)")
  })

  t.test('a client that opens and never reads holds nothing, waits for nothing, blocks nobody', async (t) => {
    const c = start(t, 'python3', [path.join(CLIENTS, 'hostile.py'), s.path, 'open-and-sleep'])
    const m = await c.waitFor(/^pid (\d+)$/m)
    await c.waitFor(/^opened 3$/m)
    const r = await stillServes(t, s)
    t.notOk([...r.holders, ...r.waiters, ...r.reservations].some((x) => x.pid === Number(m[1])), 'not in the status')
    c.child.kill('SIGKILL')
    await c.exited
    await stillServes(t, s)
  })

  t.test('after all of it: nothing left over', async (t) => {
    const r = await stillServes(t, s)
    t.same(r.holders, [])
    await waitForFds(s.pid, baseFds)
    t.equal(fdCount(s.pid), baseFds, 'no descriptor leaked in steved')
  })
})

/** steved closes a client's pidfd when it sees the exit; give it a bounded moment. */
async function waitForFds(pid: number, n: number): Promise<void> {
  const until = Date.now() + 10000
  while (fdCount(pid) !== n && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
}
