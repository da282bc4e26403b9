// Per-process accounting under pressure (issue 14): steved out of descriptors must not take
// tokens from live holders. Real steved on a real FUSE mount, real holder processes; needs
// root and /dev/fuse.

import { spawn, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'

import { run, start } from '../../../test/helpers/proc'
import { startSteved, waitForStatus } from '../../../test/helpers/steved'

const fdCount = (pid: number): number => fs.readdirSync(`/proc/${pid}/fd`).length

/** A process that takes one token and keeps it (same pid) until killed. */
function holder(t: Test, file: string): Promise<number> {
  const h = spawn('bash', ['-c', 'exec 3<"$1"; read -r -N1 -u3 x && echo got && exec sleep 600', 'holder', file], { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => h.kill('SIGKILL'))
  return new Promise((resolve, reject) => {
    h.stdout!.once('data', () => resolve(h.pid!))
    h.once('exit', (c) => reject(new Error(`holder exited (${c}) before it got a token`)))
  })
}

t.test('out of descriptors, live holders keep their tokens (pidfd_open EMFILE is not an exit)', async (t) => {
  const N = 70
  const s = await startSteved(t, { jobs: N, args: ['-v'] })
  const base = fdCount(s.pid)
  const limit = base + 20
  const r = spawnSync('prlimit', ['--pid', String(s.pid), `--nofile=${limit}:${limit}`])
  t.equal(r.status, 0, `prlimit set steved's descriptor limit to ${limit} (${base} in use)`)
  const pids: number[] = []
  for (let i = 0; i < N; i++) pids.push(await holder(t, s.path))
  t.ok(N > limit - base, `${N} live holders, more than the ${limit - base} descriptors steved has left`)
  let rep = await s.status()
  t.equal(rep.pool.free, 0, 'every token is out, none came back')
  t.equal(rep.counters.reclaimed, 0, 'nothing was reclaimed from a live holder')
  t.match(s.stderr(), /warning: cannot watch pid \d+ with a pidfd \(EMFILE\)/, 'the shortage is logged')
  // One more reader must wait: the pool is not over-committed.
  const extra = spawn('bash', ['-c', 'exec 3<"$1"; read -r -N1 -u3 x && echo got', 'extra', s.path], { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => extra.kill('SIGKILL'))
  let got = false
  extra.stdout!.on('data', () => (got = true))
  await new Promise((res) => setTimeout(res, 1500))
  t.notOk(got, 'a further reader waits (all tokens are held by live processes)')
  // The holders exit: every token comes back, those watched by polling included.
  for (const p of pids) process.kill(p, 'SIGKILL')
  await waitForStatus(s, () => got, 'the waiting reader served', 20000)
  t.ok(got, 'the waiting reader got a token once tokens came back')
  // It exits holding that token too: N + 1 reclaims, and the pool is whole.
  rep = await waitForStatus(s, (x) => x.pool.free === N, 'the pool whole again', 20000)
  t.equal(rep.counters.reclaimed, N + 1, 'each holder\'s token reclaimed exactly once')
})

t.test('early returns do not inflate the pool: 20 processes that never read each write a byte, then a reader on -j 4', async (t) => {
  const JOBS = 4
  const s = await startSteved(t, { jobs: JOBS })
  const writers = []
  for (let i = 0; i < 20; i++) {
    const c = start(t, 'python3', [path.join(__dirname, 'clients', 'hostile.py'), s.path, 'never-read', '120'])
    await c.waitFor(/^wrote$/m)
    t.equal(/^first (.*)$/m.exec(c.output())?.[1], '1', `writer ${i + 1}: its one early return is accepted`)
    writers.push(c)
  }
  t.equal((await s.status()).pool.free, JOBS, 'the pool still has jobs tokens, not jobs + 20')
  const r = await run('python3', [path.join(__dirname, 'clients', 'jsclient.py'), s.path, 'drain-count'], { timeoutMs: 20000 })
  t.match(r.stdout, new RegExp(`^drained ${JOBS}$`, 'm'), `a reader takes ${JOBS} tokens, not ${JOBS + 20}`)
  for (const c of writers) c.child.kill('SIGKILL')
  await waitForStatus(s, (x) => x.pool.free === JOBS && x.holders.length === 0, 'the pool whole')
})
