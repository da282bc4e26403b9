// Which processes are the build, on made-up process tables; and /proc/PID/stat parsing.
import * as fs from 'node:fs'
import t from 'tap'
import { parseStat, ProcFs, type ProcInfo } from '../dist/procfs'
import { isAlive, remaining, snapshotJob, supervisorOf, tableOf } from '../dist/tree'

/** A stat line as the kernel writes it (52 fields), for pid/comm/state/ppid/sid/start. */
function statLine(pid: number, comm: string, state: string, ppid: number, sid: number, start: number): string {
  const rest = [state, ppid, pid, sid, 0, -1, 4194560, 100, 0, 0, 0, 1, 2, 0, 0, 20, 0, 1, 0, start, 1000, 50]
  while (rest.length < 50) rest.push(0)
  return `${pid} (${comm}) ${rest.join(' ')}\n`
}

const P = (pid: number, ppid: number, comm: string, o: { sid?: number; start?: number; state?: string } = {}): ProcInfo => ({
  pid,
  ppid,
  comm,
  sid: o.sid ?? 50,
  start: o.start ?? pid * 10,
  state: o.state ?? 'S',
})

t.test('parseStat: fields counted from the last parenthesis', async (t) => {
  t.same(parseStat(statLine(300, 'ebuild.sh', 'S', 200, 50, 12345)), { pid: 300, comm: 'ebuild.sh', state: 'S', ppid: 200, sid: 50, start: 12345 })
  t.same(parseStat(statLine(7, 'a) b (c', 'Z', 1, 7, 99)), { pid: 7, comm: 'a) b (c', state: 'Z', ppid: 1, sid: 7, start: 99 }, 'a comm with parentheses and spaces')
  t.equal(parseStat('garbage'), null)
  t.equal(parseStat('12 (x) S 1'), null, 'too few fields')
  const self = new ProcFs().stat(process.pid)
  t.equal(self?.pid, process.pid, 'this process, from the real /proc')
  t.equal(self?.ppid, process.ppid)
  t.ok(self !== null && self.start > 0)
  t.equal(new ProcFs().stat(0x3fffffff), null, 'no such process')
})

t.test('ProcFs.environHas: exact NAME=value entries only', async (t) => {
  const root = fs.mkdtempSync('/tmp/emerge-shim-proc-')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  fs.mkdirSync(`${root}/42`)
  fs.writeFileSync(`${root}/42/environ`, 'A=1\0PORTAGE_BUILDDIR=/var/tmp/portage/a/b-1\0Z=2')
  fs.writeFileSync(`${root}/42/stat`, statLine(42, 'make', 'S', 1, 50, 5))
  const proc = new ProcFs(root)
  t.ok(proc.environHas(42, 'PORTAGE_BUILDDIR=/var/tmp/portage/a/b-1'))
  t.ok(proc.environHas(42, 'Z=2'), 'the last entry, without its NUL')
  t.notOk(proc.environHas(42, 'PORTAGE_BUILDDIR=/var/tmp/portage/a/b'), 'a prefix of the value is not a match')
  t.notOk(proc.environHas(43, 'A=1'), 'no such process')
  t.same(proc.list().map((p) => p.pid), [42])
})

t.test('supervisorOf: the nearest ancestor that is not a per-phase wrapper', async (t) => {
  const table = tableOf([
    P(1, 0, 'init'),
    P(100, 1, 'python3.13'),
    P(150, 100, 'python3.13'),
    P(200, 150, 'sandbox'),
    P(250, 200, 'pid-ns-init'),
    P(300, 250, 'ebuild.sh'),
    P(400, 100, 'bash'),
    P(500, 1, 'bash'),
  ])
  t.equal(supervisorOf(table, 300)?.pid, 150, 'past sandbox and pid-ns-init, to the forkserver (or emerge)')
  t.equal(supervisorOf(table, 400)?.pid, 100, 'a phase started by emerge itself')
  t.equal(supervisorOf(table, 500), null, 'a phase whose parent is init: emerge is already gone')
  t.equal(supervisorOf(table, 999), null, 'no such process')
  t.equal(supervisorOf(tableOf([P(300, 200, 'ebuild.sh')]), 300), null, 'the parent is not in the table')
})

t.test('snapshotJob: the roots, their descendants, and marked processes in their sessions', async (t) => {
  const marked = new Set([400, 401, 600, 700])
  const table = tableOf([
    P(1, 0, 'init', { sid: 1 }),
    P(100, 1, 'emerge'),
    P(300, 100, 'ebuild.sh'), // the root
    P(301, 300, 'ebuild.sh'), // its phase subshell
    P(302, 301, 'make'),
    P(303, 302, 'sh', { state: 'Z' }), // exited, not reaped
    P(304, 302, 'cc1', { sid: 77 }), // left the session: not the build
    P(400, 1, 'sleep'), // orphaned background process of the build
    P(401, 1, 'sccache', { sid: 401 }), // a daemon of the build: setsid()
    P(500, 100, 'ebuild.sh'), // another job's phase, same session, not marked
    P(600, 1, 'node'), // the holder itself
    P(700, 100, 'bash'), // misc-functions.sh of this job (die hooks): marked, not under the root
  ])
  const snap = snapshotJob(table, { roots: [{ pid: 300, start: 3000 }], sessions: new Set([50]), marked: (p) => marked.has(p.pid), exclude: new Set([600]) })
  t.same(snap.map((r) => r.pid).sort((a, b) => a - b), [300, 301, 302, 400, 700])
  const gone = snapshotJob(table, { roots: [{ pid: 300, start: 1 }], sessions: new Set([50]), marked: () => false, exclude: new Set() })
  t.same(gone, [], 'a root whose pid was reused is not the root')
})

t.test('remaining: live members and whatever they start; empty when the build is gone', async (t) => {
  const members = [
    { pid: 302, start: 3020 },
    { pid: 400, start: 4000 },
  ]
  const t1 = tableOf([P(1, 0, 'init', { sid: 1 }), P(302, 1, 'make'), P(310, 302, 'sh'), P(311, 310, 'cc1'), P(400, 1, 'sleep', { start: 9 }), P(500, 1, 'emerge')])
  t.same(
    remaining(t1, members, new Set([50]), new Set()).map((r) => r.pid).sort((a, b) => a - b),
    [302, 310, 311],
    'make and the jobs it started since; 400 is another process now (pid reused)',
  )
  const t2 = tableOf([P(1, 0, 'init', { sid: 1 }), P(302, 1, 'make', { state: 'Z' }), P(500, 1, 'emerge')])
  t.same(remaining(t2, members, new Set([50]), new Set()), [], 'a zombie has exited')
  t.ok(isAlive(t1, { pid: 302, start: 3020 }))
  t.notOk(isAlive(t1, { pid: 400, start: 4000 }))
})
