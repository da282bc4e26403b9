// Not steved, with real emerge (Portage 3.0.73): a plain FIFO jobserver (what a parent make 4.4
// or another server hands out)
// still gets one token per job, given back at the end; per-package caps, which are steved's
// process groups, are ignored with one warning. A pipe jobserver (R,W fds) cannot be shared by
// a job's phases: one warning, nothing else.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { FIONREAD, loadNative } from 'jobclient'
import { tmpDir } from '../../../test/helpers/steved'
import { processTag, waitUntil } from './helpers/emerge'
import { ewarns, finished, makeBed } from './helpers/portage'

// Each real emerge takes 10-40 s on a shared 2-core machine; tap's default file limit is 300 s.
t.setTimeout(900_000)

/** A FIFO with `n` tokens; the test keeps an O_RDWR fd so it never loses them. */
function fifoPool(t: Test, dir: string, n: number): { path: string; count: () => number } {
  const file = path.join(dir, 'fifo')
  if (spawnSync('mkfifo', ['-m', '0600', file]).status !== 0) throw new Error('mkfifo failed')
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
  t.teardown(() => fs.closeSync(fd))
  fs.writeSync(fd, Buffer.from('+'.repeat(n)))
  return {
    path: file,
    count() {
      const buf = Buffer.alloc(4)
      if (loadNative().ioctl(fd, FIONREAD, buf) < 0) throw new Error('FIONREAD failed')
      return buf.readInt32LE(0)
    },
  }
}

t.test('a plain FIFO jobserver: the job holds one of its tokens to the end; JOBSERVER_MAX_JOBS is ignored with one warning', async (t) => {
  const dir = tmpDir(t)
  const pool = fifoPool(t, dir, 2)
  const tag = processTag(t)
  const go = path.join(dir, 'go')
  const job = {
    name: 'fifo',
    env: { JOBSERVER_MAX_JOBS: '2' },
    makefile: `all:\n\t@touch ${dir}/compiling; while [ ! -e ${go} ]; do sleep 0.05; done\n`,
  }
  const bed = makeBed({ version: '3.0.73', jobserver: { path: pool.path }, dir, tag, packages: [job] })
  const emerge = bed.emerge(t, ['app-misc/fifo'])
  await waitUntil(() => fs.existsSync(path.join(dir, 'compiling')), 'compile', 120_000)
  t.equal(pool.count(), 1, 'one of the 2 tokens is out while the job compiles')
  fs.writeFileSync(go, '')
  const done = await finished(emerge)
  t.equal(done.code, 0, 'emerge finished', { output: done.stdout.slice(-3000) })
  t.ok(bed.installed('fifo'), 'merged')
  await waitUntil(() => /gave 1 token\(s\) back/.test(bed.holderLog('fifo')), 'the holder to give it back')
  t.equal(pool.count(), 2, 'both tokens are back in the FIFO')
  const out = bed.buildLog('fifo')
  t.equal(ewarns(out).filter((l) => /^jobserver: JOBSERVER_MAX_JOBS is ignored: \S+ is not steved/.test(l)).length, 1, 'one warning (ewarn) about the cap')
  t.match(out, /fifo-1 holds 1 token until its build ends \(holder pid \d+; the jobserver at \S+ \(not steved\)\)/)
})

t.test('a pipe jobserver (R,W fds): one warning in the first phase, no holder, the build goes on', async (t) => {
  const dir = tmpDir(t)
  const tag = processTag(t)
  const job = { name: 'pipe', makefile: 'all:\n' }
  const bed = makeBed({ version: '3.0.73', jobserver: { path: '/nonexistent' }, makeflags: '-l32 --jobserver-auth=3,4', dir, tag, packages: [job] })
  const done = await finished(bed.emerge(t, ['app-misc/pipe']))
  t.equal(done.code, 0, 'emerge finished', { output: done.stdout.slice(-3000) })
  t.ok(bed.installed('pipe'), 'merged')
  const out = bed.buildLog('pipe')
  t.equal(ewarns(out).filter((l) => /^jobserver: not used: MAKEFLAGS names pipe fds 3,4/.test(l)).length, 1, 'said once (ewarn)')
  t.equal(bed.holderLog('pipe'), '', 'no holder')
})
