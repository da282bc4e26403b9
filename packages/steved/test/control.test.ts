// The control plane against a real steved on a FUSE file: stevectl get/set through ioctls,
// who may change what, status JSON against its schema, top in tmux, and the TOML file with
// SIGHUP.

import Ajv from 'ajv'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { configToArgv } from '../src/config'
import { run, start } from '../../../test/helpers/proc'
import { maxOverlap, parseJobLog } from '../../../test/helpers/joblog'
import { MAKE44, startSteved, tmpDir, waitForStatus } from '../../../test/helpers/steved'

const CTL = path.join(__dirname, '..', 'bin', 'stevectl.js')
const CLIENT = path.join(__dirname, 'clients', 'jsclient.py')
const ctl = (device: string, ...args: string[]) => run(process.execPath, [CTL, '--device', device, ...args], { timeoutMs: 20000 })
/** stevectl as an unprivileged user (nobody), in the given primary group. */
const ctlAs = (gid: number, device: string, ...args: string[]) =>
  run('setpriv', ['--reuid', '65534', '--regid', String(gid), '--clear-groups', process.execPath, CTL, '--device', device, ...args], {
    timeoutMs: 20000,
    // Not tap's loader hooks: they write into the checkout, which nobody may.
    env: { PATH: process.env.PATH },
  })
/** A steved whose directory other users may enter (mkdtemp makes it 0700). */
async function openSteved(t: Parameters<typeof startSteved>[0], args: string[]) {
  const dir = tmpDir(t)
  fs.chmodSync(dir, 0o755)
  return startSteved(t, { jobs: 2, dir, args })
}

t.test('every setting round-trips through --set-X / --get-X, values printed in the order asked', async (t) => {
  const s = await startSteved(t, { jobs: 3 })
  const cases: Array<[string, string, string]> = [
    ['jobs', '7', '7'],
    ['min-jobs', '2', '2'],
    ['load-average', '4.5', '4.5'],
    ['load-average', 'none', 'none'],
    ['load-recheck-timeout', '1.25', '1.25'],
    ['min-memory-avail', '512', '512'],
    ['min-memory-avail', 'none', 'none'],
    ['per-process-limit', '2', '2'],
    ['per-process-limit', 'none', 'none'],
    ['reservation-expiry', '0.5', '0.5'],
  ]
  for (const [name, value, expect] of cases) {
    const r = await ctl(s.path, `--set-${name}`, value, `--get-${name}`)
    t.equal(r.code, 0, `${name}=${value}: ${r.stderr}`)
    t.equal(r.stdout, `${expect}\n`, `${name} reads back ${expect}`)
  }
  const order = await ctl(s.path, '--get-jobs', '--get-tokens', '--get-min-jobs', '--get-held')
  t.equal(order.stdout, '7\n7\n2\n0\n', 'one value per line, in the order asked')
})

t.test('bad values and unknown settings are usage errors (exit 2); read-only figures cannot be set', async (t) => {
  const s = await startSteved(t, { jobs: 2 })
  for (const args of [['--set-jobs', '0'], ['--set-jobs', '1.5'], ['--set-jobs', 'many'], ['--set-min-jobs', 'none'], ['--get-colour'], ['--set-tokens', '3'], ['--bogus']]) {
    const r = await ctl(s.path, ...args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, /^stevectl: /)
  }
  t.equal((await ctl(s.path, '--get-jobs')).stdout, '2\n', 'nothing changed')
})

t.test('raising jobs wakes waiters at once; lowering never takes tokens away', async (t) => {
  const s = await startSteved(t, { jobs: 1 })
  const holder = start(t, 'python3', [CLIENT, s.path, 'hold', '1'])
  await holder.waitFor(/^held 1/m)
  const waiter = start(t, 'python3', [CLIENT, s.path, 'block'])
  await waiter.waitFor(/^parking/m)
  await waitForStatus(s, (r) => r.waiters.some((w) => w.reason === 'no-tokens'), 'the waiter parked')
  t.equal((await ctl(s.path, '--set-jobs', '2')).code, 0)
  await waiter.waitFor(/^got b'\+'$/m)
  t.pass('the parked reader got a token when the pool grew')

  t.equal((await ctl(s.path, '--set-jobs', '1')).code, 0)
  const r = await ctl(s.path, '--get-jobs', '--get-held', '--get-tokens')
  t.equal(r.stdout, '1\n2\n-1\n', 'both holders keep their tokens; the pool is one over')
  const third = start(t, 'python3', [CLIENT, s.path, 'block'])
  await third.waitFor(/^parking/m)
  holder.child.kill('SIGKILL')
  await waitForStatus(s, (x) => x.pool.free === 0 && x.waiters.some((w) => w.reason === 'no-tokens'), 'one token back, still none free')
  t.notMatch(third.output(), /got/, 'nothing issued until under the new limit')
  waiter.child.kill('SIGKILL')
  await third.waitFor(/^got b'\+'$/m)
})

t.test('changing settings needs root or the admin group; EPERM names the group', async (t) => {
  const s = await openSteved(t, ['--admin-group', '100'])
  const nobody = await ctlAs(65534, s.path, '--set-jobs', '5')
  t.equal(nobody.code, 1)
  t.match(nobody.stderr, /not allowed to change jobs: changing settings needs root or membership in group '(users|100)'/)
  const read = await ctlAs(65534, s.path, '--get-jobs')
  t.equal(read.stdout, '2\n', 'anyone who can open the file may read')
  const member = await ctlAs(100, s.path, '--set-jobs', '5')
  t.equal(member.code, 0, `a member of the admin group may set: ${member.stderr}`)
  t.equal((await ctl(s.path, '--get-jobs')).stdout, '5\n')
})

t.test('without --admin-group only root may change settings', async (t) => {
  const s = await openSteved(t, [])
  const r = await ctlAs(100, s.path, '--set-jobs', '3')
  t.equal(r.code, 1)
  t.match(r.stderr, /needs root \(steved was started without --admin-group\)/)
})

t.test('status --json matches the documented schema with holders, waiters and reservations', async (t) => {
  const s = await startSteved(t, { jobs: 2, args: ['--reservation-expiry', '30'] })
  const holder = start(t, 'python3', [CLIENT, s.path, 'hold', '1'])
  const hm = await holder.waitFor(/^held 1 (\d+)$/m)
  // A poll(0) that sees POLLIN reserves the last free token for 30 s.
  const poller = start(t, 'python3', [CLIENT, s.path, 'poll-stay'])
  await poller.waitFor(/revents \[\(\d+, 1\)\]/)
  const waiter = start(t, 'python3', [CLIENT, s.path, 'block'])
  await waiter.waitFor(/^parking/m)
  await waitForStatus(s, (r) => r.waiters.some((w) => w.reason === 'no-tokens'), 'the waiter parked')
  const r = await ctl(s.path, 'status', '--json')
  t.equal(r.code, 0, r.stderr)
  const st = JSON.parse(r.stdout)
  const schema = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'status.schema.json'), 'utf8'))
  const ajv = new Ajv({ allErrors: true, strict: false })
  const validate = ajv.compile(schema)
  t.ok(validate(st), `valid against status.schema.json: ${ajv.errorsText(validate.errors)}`)
  t.match(st.holders, [{ pid: Number(hm[1]), tokens: 1, cmdline: /jsclient\.py .* hold 1/ }])
  t.match(st.waiters, [{ pid: waiter.pid, how: 'read', reason: 'no-tokens' }])
  t.equal(st.reservations.length, 1, 'the poller’s reservation is listed')
  t.match(st.pool, { jobs: 2, free: 0, held: 1, reserved: 1, waiting: 1 })
  t.equal(st.server.transport, 'fuse')
  const human = await ctl(s.path, 'status')
  t.match(human.stdout, /HOLDERS \(1\)[\s\S]*WAITERS \(1\)[\s\S]*RESERVATIONS \(1\)/)
})

t.test('stevectl says clearly when steved is not there or the path is not steved', async (t) => {
  const dir = tmpDir(t)
  const missing = await ctl(path.join(dir, 'nothing'), '--get-jobs')
  t.equal(missing.code, 1)
  t.match(missing.stderr, /does not exist; start steved, or use the path it serves/)
  fs.writeFileSync(path.join(dir, 'plain'), '')
  const plain = await ctl(path.join(dir, 'plain'), '--get-jobs')
  t.equal(plain.code, 1)
  t.match(plain.stderr, /is not a jobserver \(not a FIFO, a character device or a file steved serves\); start steved/)
  const none = await run(process.execPath, [CTL, '--get-jobs'], { env: { PATH: process.env.PATH } })
  if (!fs.existsSync('/dev/steve') && !fs.existsSync('/run/steved/jobserver')) {
    t.equal(none.code, 1)
    t.match(none.stderr, /steved does not seem to be running.*systemctl start steved/)
  }
})

t.test('stevectl CMD runs the command holding a token, with MAKEFLAGS at the pool', async (t) => {
  const s = await startSteved(t, { jobs: 1 })
  const r = await run(process.execPath, [CTL, '--device', s.path, '--', 'sh', '-c', 'echo "$MAKEFLAGS"; exit 3'], { timeoutMs: 30000 })
  t.equal(r.code, 3, `exit status passed through: ${r.stderr}`)
  t.match(r.stdout, new RegExp(`--jobserver-auth=fifo:${s.path}`))
  const rep = await waitForStatus(s, (x) => x.pool.free === 1, 'the token back')
  t.same([rep.counters.granted, rep.counters.returned], [1, 1], 'one token taken and given back')
})

t.test('top shows holders live in a terminal and quits on q', async (t) => {
  const s = await startSteved(t, { jobs: 2 })
  const holder = start(t, 'python3', [CLIENT, s.path, 'hold', '2'])
  const hm = await holder.waitFor(/^held 2 (\d+)$/m)
  const session = `stevectl-top-${process.pid}`
  t.teardown(() => run('tmux', ['kill-session', '-t', session]).catch(() => {}))
  const started = await run('tmux', ['new-session', '-d', '-s', session, '-x', '160', '-y', '30', process.execPath, CTL, '--device', s.path, 'top', '--interval', '0.2'])
  t.equal(started.code, 0, started.stderr)
  let screen = ''
  const until = Date.now() + 15000
  while (!screen.includes(`${hm[1]}`) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 200))
    screen = (await run('tmux', ['capture-pane', '-p', '-t', session])).stdout
  }
  t.match(screen, /0\/2 free {2}2 held/, 'the pool line')
  t.match(screen, new RegExp(`${hm[1]}\\s+2\\s+.*jsclient\\.py`), 'the holder with its tokens and command')
  await run('tmux', ['send-keys', '-t', session, 'q'])
  const gone = Date.now() + 10000
  let alive = true
  while (alive && Date.now() < gone) {
    await new Promise((r) => setTimeout(r, 100))
    alive = (await run('tmux', ['has-session', '-t', session])).code === 0
  }
  t.notOk(alive, 'q quit top (the tmux session ended with it)')
})

t.test('top at 60 columns: nothing wraps, a legend with the time scale, a labelled WAIT column', async (t) => {
  const s = await startSteved(t, { jobs: 2 })
  const holder = start(t, 'python3', [CLIENT, s.path, 'hold', '2'])
  const hm = await holder.waitFor(/^held 2 (\d+)$/m)
  const waiter = start(t, 'python3', [CLIENT, s.path, 'hold', '1'])
  const session = `stevectl-top60-${process.pid}`
  t.teardown(() => run('tmux', ['kill-session', '-t', session]).catch(() => {}))
  const started = await run('tmux', ['new-session', '-d', '-s', session, '-x', '60', '-y', '30', process.execPath, CTL, '--device', s.path, 'top', '--interval', '0.5'])
  t.equal(started.code, 0, started.stderr)
  let screen = ''
  const until = Date.now() + 15000
  while (!(screen.includes(`${hm[1]}`) && screen.includes(`\n${waiter.pid} `)) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 200))
    // -J joins lines the terminal wrapped: a wrapped line comes back longer than 60 columns.
    screen = (await run('tmux', ['capture-pane', '-p', '-J', '-t', session])).stdout
  }
  const lines = screen.split('\n')
  t.same(lines.filter((l) => [...l].length > 60), [], 'no line is wider than 60 columns')
  t.match(screen, new RegExp(`steved ${s.path.replace(/[.]/g, '\\.')}`), 'the path is whole')
  t.match(screen, /0\/2 free {2}2 held/, 'the pool')
  t.match(screen.replace(/\s+/g, ' '), /TOK: tokens held now\. WAIT: its reads waiting for a token\. HISTORY: tokens held, one sample every 0\.5 s, the last [\d.]+ s, newest on the right/, 'the legend and its time scale')
  t.match(screen, /^PID +TOK +WAIT +HISTORY +COMMAND$/m, 'the column heads')
  t.match(screen, new RegExp(`^${hm[1]} +2 +\\S* +python3 `, 'm'), 'the holder row, its program without a directory')
  t.match(screen, new RegExp(`^${waiter.pid} +0 +1 `, 'm'), 'the waiter: no token, one read waiting')
  await run('tmux', ['send-keys', '-t', session, 'q'])
})

t.test('TOML config: flags override it; SIGHUP applies a good file and rejects a broken one', async (t) => {
  const dir = tmpDir(t)
  const cfg = path.join(dir, 'steved.toml')
  fs.writeFileSync(cfg, '# test configuration\njobs = 2\nmin-jobs = 1\nmystery = 1\n')
  const s = await startSteved(t, { jobs: 3, dir, args: ['--config', cfg, '--load-average', '8'] })
  t.match(s.stderr(), /unknown key 'mystery' ignored/, 'unknown keys are named')
  // startSteved passes -j 3 on the command line: it beats the file.
  t.equal((await ctl(s.path, '--get-jobs', '--get-load-average')).stdout, '3\n8\n')
  fs.writeFileSync(cfg, 'jobs = 2\nper-process-limit = 4\nreservation-expiry = 2.5\n')
  s.child.kill('SIGHUP')
  await waitFor(() => /configuration reloaded/.test(s.stderr()), 'the reload')
  t.equal((await ctl(s.path, '--get-jobs', '--get-per-process-limit', '--get-reservation-expiry')).stdout, '3\n4\n2.5\n', 'file settings applied live, flags still win')
  fs.writeFileSync(cfg, 'jobs = 2\nper-process-limit = [\n')
  s.child.kill('SIGHUP')
  await waitFor(() => /configuration rejected/.test(s.stderr()), 'the rejection')
  t.match(s.stderr(), new RegExp(`configuration rejected, settings unchanged: ${cfg.replace(/\./g, '\\.')}:\\d+:\\d+: `), 'names the file, line and column')
  t.equal((await ctl(s.path, '--get-per-process-limit')).stdout, '4\n', 'the running settings stay in force')
  fs.writeFileSync(cfg, 'per-process-limit = 0\n')
  s.child.kill('SIGHUP')
  await waitFor(() => /rejected.*steved.toml:1:21: 'per-process-limit' must be a whole number from 1 to/.test(s.stderr()), 'a validation rejection')
  t.equal((await ctl(s.path, '--get-per-process-limit')).stdout, '4\n')
})

t.test('config files: types checked, parse errors carry line and column', async (t) => {
  t.same(configToArgv('jobs = 4\nmode = "0660"\nverbose = true\nload-average = 2.5\n', 'f').argv, ['--jobs=4', '--mode=0660', '--verbose', '--load-average=2.5'])
  t.same(configToArgv('mode = 0o660\n', 'f').argv, ['--mode=0660'])
  t.throws(() => configToArgv('jobs = "four"\n', 'f'), { code: 'ERR_STEVED_USAGE', message: /'jobs' must be a number/ })
  t.throws(() => configToArgv('jobs = 4\njobs = 5\n', 'f.toml'), { code: 'ERR_STEVED_USAGE', message: /^f\.toml:2:\d+: / })
  t.match(configToArgv('colour = "red"\n', 'f').warnings, [/unknown key 'colour'/])
  // Issue 14: values the TOML parser accepts but we cannot are reported at their line and column.
  const located: Array<[string, RegExp]> = [
    ['jobs = 9007199254740993\n', /^f:1:8: 'jobs' must be at most 9007199254740991/],
    ['# c\n\n  load-average = 99999999999999999999\n', /^f:3:18: 'load-average' must be at most/],
    ['jobs = 4\ngroup = 5\n', /^f:2:9: 'group' must be a string \(got 5\)/],
    ['verbose = "yes"\n', /^f:1:11: 'verbose' must be true or false/],
  ]
  for (const [text, re] of located) t.throws(() => configToArgv(text, 'f'), { code: 'ERR_STEVED_USAGE', message: re }, JSON.stringify(text))
})

async function waitFor(pred: () => boolean, what: string, ms = 10000): Promise<void> {
  const until = Date.now() + ms
  while (!pred()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

t.test('a capped process tree (stevectl group join) never exceeds its cap while another build uses the rest', async (t) => {
  const dir = tmpDir(t)
  fs.chmodSync(dir, 0o755)
  const s = await startSteved(t, { jobs: 6, dir })
  const log = path.join(dir, 'jobs.log')
  for (const name of ['capped', 'free']) {
    const targets = Array.from({ length: 12 }, (_, i) => `${name}-${i}`).join(' ')
    fs.writeFileSync(
      path.join(dir, `${name}.mk`),
      `all: ${targets}\n${targets}:\n\t@echo "start $@ $$(date +%s%N)" >> ${log}; sleep 0.3; echo "end $@ $$(date +%s%N)" >> ${log}\n`,
    )
  }
  const env = { ...process.env, MAKEFLAGS: s.makeflags }
  // The capped build's shell waits until it is in its group before it starts make.
  const capped = start(t, 'bash', ['-c', `while [ ! -e ${dir}/go ]; do sleep 0.02; done; exec ${MAKE44} -f ${dir}/capped.mk`], { env })
  const joined = await ctl(s.path, 'group', 'join', 'dev-qt/qtwebengine', String(capped.pid), '2')
  t.equal(joined.code, 0, joined.stderr)
  const st = JSON.parse((await ctl(s.path, 'status', '--json')).stdout)
  t.match(st.groups, [{ name: 'dev-qt/qtwebengine', limit: 2, roots: [capped.pid] }])
  fs.writeFileSync(path.join(dir, 'go'), '')
  const free = await run(MAKE44, ['-f', path.join(dir, 'free.mk')], { env, timeoutMs: 120000 })
  const c = await capped.exited
  t.equal(c.code, 0, c.stderr)
  t.equal(free.code, 0, free.stderr)
  const jobs = parseJobLog(fs.readFileSync(log, 'utf8'))
  const cappedPeak = maxOverlap(jobs.filter((j) => j.name.startsWith('capped-')))
  const freePeak = maxOverlap(jobs.filter((j) => j.name.startsWith('free-')))
  t.ok(cappedPeak <= 2 + 1, `capped build peaked at ${cappedPeak} jobs: 2 tokens + its implicit slot`)
  t.ok(freePeak > 3, `the uncapped build peaked at ${freePeak} jobs: it used the rest of the pool`)
  const after = JSON.parse((await ctl(s.path, 'status', '--json')).stdout)
  t.same(after.groups, [], 'the group ended with its root')
  const other = await ctlAs(65534, s.path, 'group', 'join', 'x', String(process.pid), '1')
  t.equal(other.code, 1, 'nobody may cap root-owned processes')
  t.match(other.stderr, /belong to another user/)
})

// Inside another pid namespace (Portage's FEATURES=pid-sandbox, a container) a process knows
// neither its own pid nor its parent's as steved sees them. A join may name "the caller" or
// "the caller's parent" instead (GROUP_FLAG_CALLER, GROUP_FLAG_PARENT): steved resolves them
// from the request. Here a shell is pid 1 of a new namespace; its Python child joins.
const JOIN_FROM_NAMESPACE = `
import fcntl, os, struct, sys, time
GROUP = (1 << 30) | (256 << 16) | (ord("j") << 8) | 0x04
path, name, flag = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(path, os.O_RDWR)
buf = struct.pack("<IIIId", 1, flag, 0, 0, 2.0) + name.encode() + b"\\0"
fcntl.ioctl(fd, GROUP, buf + bytes(256 - len(buf)))
print("joined", os.getpid(), os.getppid(), flush=True)
time.sleep(300)
`

t.test('a join from inside a pid namespace names the caller or its parent as steved sees them', async (t) => {
  const s = await startSteved(t, { jobs: 2 })
  const kids = (pid: number): number[] =>
    fs.readdirSync(`/proc/${pid}/task`).flatMap((tid) => fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number))
  for (const [flag, which] of [[4, 'parent'], [2, 'caller']] as const) {
    const u = start(t, 'unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', 'sh', '-c', `python3 -c '${JOIN_FROM_NAMESPACE.replace(/'/g, `'"'"'`)}' ${s.path} ns-${which} ${flag}; exit 0`])
    const m = await u.waitFor(/^joined (\d+) (\d+)$/m)
    t.same([m[1], m[2]], ['2', '1'], `inside, the Python client is pid 2 and its parent, the shell, pid 1 (${which})`)
    // The namespace's processes as we see them, found from unshare (outside) down.
    const [shell] = kids(u.pid)
    const [python] = kids(shell)
    const st = JSON.parse((await ctl(s.path, 'status', '--json')).stdout)
    const g = st.groups.find((x: { name: string }) => x.name === `ns-${which}`)
    t.same(g?.roots, [which === 'parent' ? shell : python], `the group's root is the ${which === 'parent' ? 'shell' : 'client'} as steved sees it (pid ${which === 'parent' ? shell : python}), not pid ${which === 'parent' ? 1 : 2}`)
    u.child.kill('SIGKILL')
    await u.exited
  }
  await waitForStatus(s, (r) => r.groups.length === 0, 'the groups to end with their roots')
})

t.test("the group codec: 'caller' and 'parent' travel as flag bits with pid 0, a pid as itself", async (t) => {
  const { encodeGroup, decodeGroup, GROUP_OP_JOIN } = await import('jobclient')
  for (const pid of ['caller', 'parent', 4242] as const) {
    const b = encodeGroup({ op: GROUP_OP_JOIN, name: 'g', pid, limit: null })
    t.same([b.readUInt32LE(4), b.readUInt32LE(8)], [{ caller: 1 | 2, parent: 1 | 4 }[pid as string] ?? 1, typeof pid === 'number' ? pid : 0], `${pid}: flags (FLAG_UNSET for no limit, and the root's bit) and the pid field`)
    t.same(decodeGroup(b), { op: GROUP_OP_JOIN, name: 'g', pid, limit: null }, `${pid}: decodes to itself`)
  }
})
