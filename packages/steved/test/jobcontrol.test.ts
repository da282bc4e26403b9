// Job control (issue 14): what a parked reader sees after SIGSTOP and SIGCONT (Ctrl-Z, fg),
// next to what a FIFO does, and that a stopped holder keeps its tokens. Real processes, real
// FUSE mount, real FIFO; the behaviour chosen is documented in docs/protocol.md.

import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'

import { start, type Started } from '../../../test/helpers/proc'
import { MAKE44, startSteved, tmpDir, waitForStatus } from '../../../test/helpers/steved'

const CLIENTS = path.join(__dirname, 'clients')
const state = (pid: number): string => /^State:\s+(\S)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '?'

async function until(what: string, pred: () => boolean, ms = 10000): Promise<void> {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** SIGSTOP, wait until it is stopped, SIGCONT, wait until it is not. Returns whether it stopped. */
async function stopAndContinue(pid: number): Promise<boolean> {
  process.kill(pid, 'SIGSTOP')
  let stopped = true
  try {
    await until(`pid ${pid} stopped`, () => state(pid) === 'T', 5000)
  } catch {
    stopped = false
  }
  process.kill(pid, 'SIGCONT')
  return stopped
}

function holder(t: Test, file: string): Started {
  return start(t, 'bash', ['-c', 'exec 3<"$1"; read -r -N1 -u3 x && echo got && exec sleep 600', 'holder', file])
}

t.test('a parked blocking reader stopped and continued: it stops at once, and its read returns EINTR', async (t) => {
  const s = await startSteved(t, { jobs: 1 })
  const h = holder(t, s.path)
  await h.waitFor(/^got$/m)
  const c = start(t, 'python3', [path.join(CLIENTS, 'rawread.py'), s.path, 'retry'])
  await c.waitFor(/^parked$/m)
  await waitForStatus(s, (r) => r.waiters.some((w) => w.how === 'read'), 'the read parked')
  t.ok(await stopAndContinue(c.pid), 'SIGSTOP stops the reader at once (Ctrl-Z works)')
  await c.waitFor(/^errno EINTR$/m)
  t.pass('after SIGCONT its read(2) returned EINTR (a FIFO restarts it; FUSE cannot: see docs/protocol.md)')
  t.equal((await s.status()).counters.interrupts, 1, 'steved answered the interrupt')
  // A client that retries on EINTR (make, jobserver-rs, Python's os.read) reads on and is served.
  await c.waitFor(/^parked\nerrno EINTR\nparked$/m)
  h.child.kill('SIGKILL')
  await c.waitFor(/^got$/m)
  t.pass('its retry got the token once the holder was gone')
})

t.test('the same on a FIFO: the read is restarted after SIGCONT, no EINTR', async (t) => {
  const dir = tmpDir(t)
  const fifo = path.join(dir, 'fifo')
  execFileSync('mkfifo', [fifo])
  const c = start(t, 'python3', [path.join(CLIENTS, 'rawread.py'), fifo])
  await c.waitFor(/^parked$/m)
  await new Promise((r) => setTimeout(r, 200))
  t.ok(await stopAndContinue(c.pid), 'it stops')
  await new Promise((r) => setTimeout(r, 300))
  fs.writeFileSync(fifo, '+')
  await c.waitFor(/^(got|errno \w+)$/m)
  t.match(c.output(), /^got$/m, 'the FIFO read carried on after SIGCONT and got the byte')
  t.notMatch(c.output(), /errno/, 'no error')
})

t.test('GNU make stopped and continued while it waits for a token finishes normally', async (t) => {
  const s = await startSteved(t, { jobs: 1 })
  const dir = tmpDir(t)
  fs.writeFileSync(path.join(dir, 'Makefile'), 'all: a b\na b:\n\t@sleep 0.5; echo done $@\n')
  const h = holder(t, s.path)
  await h.waitFor(/^got$/m)
  const m = start(t, MAKE44, ['-C', dir], { env: { ...process.env, MAKEFLAGS: s.makeflags } })
  // make runs one recipe in its implicit slot and waits (in pselect: a poller) for a token.
  await waitForStatus(s, (r) => r.waiters.some((w) => w.pid === m.pid), 'make waiting for a token')
  t.ok(await stopAndContinue(m.pid), 'make stops at once')
  await new Promise((r) => setTimeout(r, 300))
  h.child.kill('SIGKILL')
  const done = await m.exited
  t.equal(done.code, 0, `make exit 0 ${done.stderr}`)
  t.match(done.stdout, /done a/)
  t.match(done.stdout, /done b/)
})

t.test('a stopped holder keeps its tokens until it exits', async (t) => {
  const s = await startSteved(t, { jobs: 1 })
  const h = holder(t, s.path)
  await h.waitFor(/^got$/m)
  process.kill(h.pid, 'SIGSTOP')
  await until('holder stopped', () => state(h.pid) === 'T')
  const c = start(t, 'python3', [path.join(CLIENTS, 'rawread.py'), s.path])
  await c.waitFor(/^parked$/m)
  await new Promise((r) => setTimeout(r, 1500))
  const r = await s.status()
  t.equal(r.holders.find((x) => x.pid === h.pid)?.tokens, 1, 'the stopped holder still holds its token')
  t.equal(r.pool.free, 0)
  t.notMatch(c.output(), /got/, 'the waiter waits')
  process.kill(h.pid, 'SIGKILL')
  await c.waitFor(/^got$/m)
  t.pass('killing the stopped holder gives its token to the waiter')
})
