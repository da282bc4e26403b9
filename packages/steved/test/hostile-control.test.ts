// The control plane against a hostile local user and odd settings (issue 14, part A): group
// ownership, the status snapshot store, out-of-range timeouts and counts, and SIGHUP reading
// the configuration (all or nothing, never blocking, runtime changes kept). Unprivileged cases
// run as a throw-away user created for the test and removed in teardown. Needs root and
// /dev/fuse (real FUSE mounts).

import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'

import { run, start } from '../../../test/helpers/proc'
import { throwAwayUser as makeUser } from '../../../test/helpers/users'
import { ROOT, startSteved, tmpDir, type RunningSteved } from '../../../test/helpers/steved'

const PKG = path.join(ROOT, 'packages', 'steved')
const CTL = path.join(PKG, 'bin', 'stevectl.js')
const BIN = path.join(PKG, 'bin', 'steved.js')
const ctl = (device: string, ...args: string[]) => run(process.execPath, [CTL, '--device', device, ...args], { timeoutMs: 20000 })

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`)
}

/** A throw-away user (test/helpers/users.ts), named after this test process. */
const throwAwayUser = (t: Test, suffix: string) => makeUser(t, `stv${process.pid % 100000}${suffix}`)

/** A steved any user may open: its directory is 0755 (mkdtemp makes it 0700), its file 0666. */
async function openSteved(t: Test, jobs: number | null, args: string[] = []): Promise<RunningSteved> {
  const dir = tmpDir(t)
  fs.chmodSync(dir, 0o755)
  return startSteved(t, { jobs, dir, args: ['--mode', '0666', ...args] })
}

async function status(s: RunningSteved): Promise<any> {
  const r = await ctl(s.path, 'status', '--json')
  if (r.code !== 0) throw new Error(`stevectl status: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

async function waitFor(pred: () => boolean | Promise<boolean>, what: string, ms = 20000): Promise<void> {
  const until = Date.now() + ms
  while (!(await pred())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

t.test('groups belong to their creator: another user may not change, join, dissolve or escape them', async (t) => {
  const u = throwAwayUser(t, 'g')
  const s = await openSteved(t, 6)
  const env = { PATH: process.env.PATH } // not tap's loader hooks: they write into the checkout
  const asUser = (...args: string[]) => run('setpriv', u.as(process.execPath, CTL, '--device', s.path, ...args), { timeoutMs: 20000, env })
  const sleeper = (user: boolean) => start(t, user ? 'setpriv' : 'sleep', user ? u.as('sleep', '300') : ['300'])
  const rootProc = sleeper(false)
  const userProc = sleeper(true)
  const userProc2 = sleeper(true)

  t.equal((await ctl(s.path, 'group', 'join', 'pkg', String(rootProc.pid), '1')).code, 0, "root creates group 'pkg' with limit 1")

  const lift = await asUser('group', 'join', 'pkg', String(userProc.pid), 'none')
  t.equal(lift.code, 1, "the user may not join root's group (and so not lift its cap)")
  t.match(lift.stderr, /belong to another user/)
  t.equal((await asUser('group', 'join', 'pkg', String(userProc.pid), '3')).code, 1, 'nor change its limit')
  t.equal((await asUser('group', 'remove', 'pkg')).code, 1, 'nor dissolve it')
  let st = await status(s)
  t.match(st.groups, [{ name: 'pkg', limit: 1, owner: 0, roots: [rootProc.pid] }], "root's group is as root left it")

  t.equal((await asUser('group', 'join', 'mine', String(userProc.pid), '2')).code, 0, 'the user creates a group of their own processes')
  t.equal((await asUser('group', 'join', 'mine', String(rootProc.pid), '2')).code, 1, "but may not put root's processes into it")
  t.equal((await asUser('group', 'join', 'mine', String(userProc.pid), '3')).code, 0, 'and may change its limit')
  st = await status(s)
  t.match(st.groups.find((g: { name: string }) => g.name === 'mine'), { limit: 3, owner: u.uid }, 'owned by the user')

  t.equal((await ctl(s.path, 'group', 'join', 'pkg', String(userProc2.pid), '1')).code, 0, "root may cap the user's processes")
  t.equal((await asUser('group', 'join', 'mine', String(userProc2.pid), 'none')).code, 1, 'the user may not move a process out of a group root owns')
  st = await status(s)
  t.match(st.groups.find((g: { name: string }) => g.name === 'pkg'), { limit: 1, owner: 0, roots: [rootProc.pid, userProc2.pid] })

  t.equal((await ctl(s.path, 'group', 'join', 'mine', String(userProc.pid), '1')).code, 0, "root may change the user's group")
  st = await status(s)
  t.match(st.groups.find((g: { name: string }) => g.name === 'mine'), { limit: 1, owner: 0 }, 'and then owns it')
  t.equal((await asUser('group', 'join', 'mine', String(userProc.pid), 'none')).code, 1, 'so the user cannot undo the cap root set')
  t.equal((await asUser('group', 'remove', 'mine')).code, 1, 'nor dissolve it')
  t.equal((await ctl(s.path, 'group', 'remove', 'mine')).code, 0, 'root may')

  // Squatting: the user makes a group under a name root will use; root's join starts it afresh.
  const squatter = start(t, 'setpriv', u.as('sleep', '300'))
  t.equal((await asUser('group', 'join', 'dev-qt/qtwebengine-6', String(squatter.pid), 'none')).code, 0)
  const rootBuild = sleeper(false)
  t.equal((await ctl(s.path, 'group', 'join', 'dev-qt/qtwebengine-6', String(rootBuild.pid), '2')).code, 0)
  st = await status(s)
  t.match(
    st.groups.find((g: { name: string }) => g.name === 'dev-qt/qtwebengine-6'),
    { limit: 2, owner: 0, roots: [rootBuild.pid] },
    "a user's group under a name root uses loses the user's trees: they do not eat root's cap",
  )
  t.equal((await ctl(s.path, 'group', 'remove', 'dev-qt/qtwebengine-6')).code, 0)

  const own = start(t, 'setpriv', u.as('sleep', '300'))
  t.equal((await asUser('group', 'join', 'own', String(own.pid), '1')).code, 0)
  t.equal((await asUser('group', 'remove', 'own')).code, 0, 'the user dissolves a group they own')
  st = await status(s)
  t.same(
    st.groups.map((g: { name: string }) => g.name),
    ['pkg'],
    'only the groups still wanted are left',
  )
})

// N children of the throw-away user each park a read (so the status lists them, with a long
// command line), then fetch chunk 0 of the status and never read on (the program's docstring).
const READERS = fs.readFileSync(path.join(ROOT, 'test', 'helpers', 'stalled_status_readers.py'), 'utf8')

function rssKiB(pid: number): number {
  return Number(/^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1])
}

t.test('status readers that never finish cannot grow steved: snapshots are capped per user and go when the reader exits', async (t) => {
  const u = throwAwayUser(t, 's')
  const s = await openSteved(t, 1)
  const N = 150
  const holder = start(t, 'python3', ['-c', 'import os,sys,time\nfd=os.open(sys.argv[1],os.O_RDWR)\nos.read(fd,1)\nprint("held",flush=True)\ntime.sleep(600)', s.path])
  await holder.waitFor(/held/)
  // The long argument makes every child's command line 8 KB: before the cap, each reader's
  // snapshot held every waiter's command line in full.
  const readers = start(t, 'setpriv', u.as('/usr/bin/python3', '-c', READERS, s.path, String(N), 'park', 'x'.repeat(8000)), {
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
    cwd: '/',
    env: { PATH: process.env.PATH },
  })
  t.teardown(() => {
    try {
      process.kill(-readers.pid, 'SIGKILL')
    } catch {}
  })
  await readers.waitFor(/^ready$/m, 60000)
  await waitFor(async () => (await status(s)).pool.waiting === N, `${N} parked readers`)
  const before = await status(s)
  t.ok(before.waiters.every((w: { cmdline: string }) => w.cmdline.length <= 1024 + 2), 'command lines in the status are cut to 1024 characters')
  const baseline = rssKiB(s.pid)
  readers.child.stdin!.write('go\n')
  const fetched = await readers.waitFor(/fetched (\d+) errors (\d+)/, 60000)
  t.equal(Number(fetched[1]), N, 'every reader got chunk 0')
  const grew = rssKiB(s.pid) - baseline
  t.ok(grew < 100 * 1024, `steved grew by ${Math.round(grew / 1024)} MiB over ${N} unfinished reads (no more than 100 MiB; 229 MiB before the cap)`)
  const during = await status(s)
  t.ok(during.server.statusSnapshots?.count <= 4, `at most 4 unfinished snapshots kept for the user (${JSON.stringify(during.server.statusSnapshots)})`)

  process.kill(-readers.pid, 'SIGKILL')
  await waitFor(async () => (await status(s)).pool.waiting === 0, 'the readers gone')
  const after = await status(s)
  t.same(after.server.statusSnapshots, { count: 0, bytes: 0 }, 'their snapshots went with them')
})

// Raw control requests as root (docs/control.md): out-of-range values and a group name with no
// NUL inside its 231 bytes are refused whoever asks.
const RAW = `
import errno, fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
SET = (1 << 30) | (16 << 16) | (ord("j") << 8) | 0x02
GROUP = (1 << 30) | (256 << 16) | (ord("j") << 8) | 0x04
def req(name, cmd, buf):
    try:
        fcntl.ioctl(fd, cmd, buf); print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
req("reservation-expiry-3000000", SET, struct.pack("<IId", 6, 0, 3000000.0))
req("load-recheck-timeout-3000000", SET, struct.pack("<IId", 3, 0, 3000000.0))
req("reservation-expiry-86400", SET, struct.pack("<IId", 6, 0, 86400.0))
req("jobs-1e300", SET, struct.pack("<IId", 0, 0, 1e300))
req("jobs-inf", SET, struct.pack("<IId", 0, 0, float("inf")))
def group(n):
    return struct.pack("<IIIId", 1, 0, os.getpid(), 0, 1.0) + (b"g" * n).ljust(232, b"\\0")
req("group-name-232", GROUP, group(232))
req("group-name-231", GROUP, group(231))
`

t.test('control requests out of range are refused (EINVAL) even from root', async (t) => {
  const s = await openSteved(t, 2)
  const r = await run('python3', ['-c', RAW, s.path], { timeoutMs: 20000 })
  t.equal(r.code, 0, r.stderr)
  const got = Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split(' ')))
  t.same(got, {
    'reservation-expiry-3000000': 'EINVAL',
    'load-recheck-timeout-3000000': 'EINVAL',
    'reservation-expiry-86400': 'ok',
    'jobs-1e300': 'EINVAL',
    'jobs-inf': 'EINVAL',
    'group-name-232': 'EINVAL',
    'group-name-231': 'ok',
  })
  t.equal((await ctl(s.path, '--get-reservation-expiry', '--get-jobs')).stdout, '86400\n2\n')
  const long = await ctl(s.path, 'group', 'join', 'g'.repeat(232), String(process.pid), '1')
  t.equal(long.code, 2, 'stevectl refuses a 232-byte group name itself')
  t.match(long.stderr, /at most 231 bytes/)
})

/** Send SIGHUP and wait for steved's verdict on it; returns what it logged meanwhile. */
async function hup(s: RunningSteved): Promise<string> {
  const from = s.stderr().length
  s.child.kill('SIGHUP')
  await waitFor(() => /configuration (reloaded|rejected)/.test(s.stderr().slice(from)), 'the verdict on SIGHUP')
  return s.stderr().slice(from)
}

t.test('SIGHUP: all or nothing, bounded and non-blocking reads, runtime changes kept until the file changes them', async (t) => {
  const dir = tmpDir(t)
  const cfg = path.join(dir, 'steved.toml')
  fs.writeFileSync(cfg, 'jobs = 4\nper-process-limit = 2\n')
  const s = await startSteved(t, { jobs: null, dir, args: ['--config', cfg] })
  const get = async () => (await ctl(s.path, '--get-jobs', '--get-per-process-limit', '--get-reservation-expiry', '--get-load-recheck-timeout')).stdout
  t.equal(await get(), '4\n2\n1\n0.5\n')

  fs.writeFileSync(cfg, 'jobs = 6\nper-process-limit = 1\nadmin-group = "nosuchgroup14a"\n')
  t.match(await hup(s), /configuration rejected, settings unchanged: .*unknown group 'nosuchgroup14a'/)
  t.equal(await get(), '4\n2\n1\n0.5\n', 'a file with an unknown admin group changes nothing (not jobs, not the limit)')

  for (const key of ['reservation-expiry', 'load-recheck-timeout']) {
    fs.writeFileSync(cfg, `jobs = 4\n${key} = 3000000\n`)
    t.match(await hup(s), new RegExp(`rejected.*steved\\.toml:2:\\d+: '${key}' must be .*<= 86400`), `${key} beyond a day is rejected`)
  }
  fs.writeFileSync(cfg, '# big\njobs = 99999999999999999999\n')
  const big = await hup(s)
  t.match(big, new RegExp(`rejected, settings unchanged: ${cfg.replace(/\./g, '\\.')}:2:8: 'jobs' must be at most 9007199254740991`), 'an integer beyond 2^53: file, line and column')
  t.equal(await get(), '4\n2\n1\n0.5\n')

  fs.writeFileSync(cfg, 'jobs = 4\nper-process-limit = 2\n' + `# ${'x'.repeat(98)}\n`.repeat(100_000))
  t.match(await hup(s), /rejected.*larger than 65536 bytes/, 'a 10 MB file is refused, not parsed')

  // The rule for runtime changes: kept while the file's value is the one last applied.
  fs.writeFileSync(cfg, 'jobs = 4\nper-process-limit = 2\n')
  t.equal((await ctl(s.path, '--set-jobs', '7')).code, 0)
  const kept = await hup(s)
  t.match(kept, /jobs stays 7 as set at runtime \(the configuration says 4 and did not change\)/, 'the kept runtime value is logged')
  t.match(kept, /configuration reloaded/)
  t.equal(await get(), '7\n2\n1\n0.5\n', 'SIGHUP with the file unchanged keeps jobs = 7 set by stevectl')
  fs.writeFileSync(cfg, 'jobs = 5\nper-process-limit = 2\n')
  t.match(await hup(s), /configuration reloaded/)
  t.equal(await get(), '5\n2\n1\n0.5\n', "once the file's jobs changes, the file wins")

  // A FIFO at the config path: opened without blocking, refused; the daemon keeps serving.
  fs.rmSync(cfg)
  sh('mkfifo', [cfg])
  t.match(await hup(s), /rejected.*not a regular file/)
  t.equal(await get(), '5\n2\n1\n0.5\n', 'still serving')
  s.child.kill('SIGTERM')
  await waitFor(() => s.child.exitCode !== null || s.child.signalCode !== null, 'steved to stop on SIGTERM')
  t.equal(s.child.exitCode, 0, 'and SIGTERM stops it cleanly')
})

t.test('start-up: a FIFO, an oversized file, a huge integer or a timeout beyond a day are usage errors (exit 2)', async (t) => {
  const dir = tmpDir(t)
  const file = path.join(dir, 'jobserver')
  const steved = (...args: string[]) => run(process.execPath, [BIN, '--transport', 'fuse', '--path', file, ...args], { timeoutMs: 20000 })
  const cfg = (name: string, text: string | null): string => {
    const p = path.join(dir, name)
    if (text === null) sh('mkfifo', [p])
    else fs.writeFileSync(p, text)
    return p
  }
  const cases: Array<[string, string[], RegExp]> = [
    ['a FIFO', ['--config', cfg('fifo.toml', null)], /not a regular file/],
    ['a directory', ['--config', dir], /not a regular file/],
    ['a 70 KB file', ['--config', cfg('big.toml', '#'.repeat(70 * 1024) + '\n')], /larger than 65536 bytes/],
    ['an integer beyond 2^53', ['--config', cfg('int.toml', 'jobs = 9007199254740993\n')], /int\.toml:1:8: 'jobs' must be at most 9007199254740991/],
    ['reservation-expiry = 3000000', ['--config', cfg('res.toml', 'reservation-expiry = 3000000\n')], /res\.toml:1:22: 'reservation-expiry' must be .*<= 86400/],
    ['--reservation-expiry 3000000', ['--reservation-expiry', '3000000'], /--reservation-expiry must be .*<= 86400/],
    ['--load-recheck-timeout 3000000', ['--load-recheck-timeout', '3000000'], /--load-recheck-timeout must be .*<= 86400/],
    ['-j with 400 nines', ['-j', '9'.repeat(400)], /-j\/--jobs must be a whole number from 1 to 1000000/],
  ]
  for (const [what, args, re] of cases) {
    const r = await steved(...args)
    t.equal(r.code, 2, `${what}: exit 2`)
    t.match(r.stderr, re, what)
    t.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line`)
  }
})
