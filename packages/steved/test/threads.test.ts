// Tokens belong to processes, requests carry thread ids (issue 14): a thread's id that becomes
// a new process's pid must not charge that process's tokens to the old one. A unit test of the
// mapping on a procfs laid out in a directory, and a real one: real threads, a real pid reuse
// (forced with ns_last_pid, root only) against steved on a real FUSE mount.

import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { ThreadMap } from '../src/io/procfs'
import { startSteved, tmpDir, waitForStatus } from '../../../test/helpers/steved'

/** Lay out /proc entries: `status` with its Tgid, and the task directory of the process. */
function task(root: string, tgid: number, tid: number): void {
  fs.mkdirSync(path.join(root, String(tid)), { recursive: true })
  fs.writeFileSync(path.join(root, String(tid), 'status'), `Name:\tx\nTgid:\t${tgid}\nPid:\t${tid}\n`)
  fs.mkdirSync(path.join(root, String(tgid), 'task', String(tid)), { recursive: true })
}

t.test('ThreadMap: a cached thread id that now names another process is looked up again', async (t) => {
  const root = tmpDir(t, 'steved-procfs-')
  task(root, 100, 100)
  task(root, 100, 105)
  const m = new ThreadMap(root)
  t.equal(m.tgid(105), 100, 'a thread maps to its process')
  t.equal(m.tgid(100), 100)
  // The thread ends; its id becomes the pid of a new process while 100 lives on.
  fs.rmSync(path.join(root, '100', 'task', '105'), { recursive: true })
  fs.rmSync(path.join(root, '105'), { recursive: true })
  task(root, 105, 105)
  t.equal(m.tgid(105), 105, 'the new process is itself, not the old thread\'s process (before: 100)')
  t.equal(m.tgid(100), 100, 'the old process is unaffected')
  m.forget(100)
  t.equal(m.tgid(105), 105, 'forgetting the old process does not touch the new one')
})

t.test('a reused thread id on a real mount: the new process is charged, and reclaimed when it dies', async (t) => {
  const s = await startSteved(t, { jobs: 4 })
  const c = spawn('python3', [path.join(__dirname, 'clients', 'tidreuse.py'), s.path], { stdio: ['pipe', 'pipe', 'pipe'] })
  t.teardown(() => c.kill('SIGKILL'))
  let out = ''
  let err = ''
  c.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
  c.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d))
  const until = Date.now() + 60000
  while (!/^child-got$/m.test(out)) {
    if (c.exitCode !== null || Date.now() > until) throw new Error(`tidreuse.py did not get its child going: ${out} ${err}`)
    await new Promise((r) => setTimeout(r, 20))
  }
  const main = Number(/^main (\d+)$/m.exec(out)![1])
  const thread = Number(/^thread (\d+)$/m.exec(out)![1])
  const child = Number(/^child (\d+)$/m.exec(out)![1])
  t.not(thread, main, 'the first token was read by a thread that is not the main one')
  t.equal(child, thread, 'the new process got the thread\'s id as its pid')
  let r = await s.status()
  t.equal(r.holders.find((h) => h.pid === main)?.tokens, 1, 'the old process holds the token its thread read')
  t.equal(r.holders.find((h) => h.pid === child)?.tokens, 1, 'the new process holds its own token (before: both charged to the old one)')
  c.stdin!.write('\n')
  while (!/^child-gone$/m.test(out)) await new Promise((res) => setTimeout(res, 20))
  r = await waitForStatus(s, (x) => x.pool.free === 3, 'the dead child\'s token back')
  t.equal(r.counters.reclaimed, 1, 'reclaimed from the new process at its death')
  t.equal(r.holders.find((h) => h.pid === main)?.tokens, 1, 'the old process still holds its own')
  c.stdin!.write('\n')
  await waitForStatus(s, (x) => x.pool.free === 4, 'everything back after both exit')
})
