// What an unlucky admin does to a running steved (issue 14): a --path it cannot create, a
// broken stderr pipe, a renamed mount directory, -v. Real steved processes on real FUSE mounts;
// needs root and /dev/fuse and fails without them.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import * as os from 'node:os'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'

import { waitUntil } from '../../../test/helpers/common'
import { run } from '../../../test/helpers/proc'
import { STEVED_BIN, isMounted, requireFuseRoot, startSteved, tmpDir, waitForStatus } from '../../../test/helpers/steved'

const CLIENTS = path.join(__dirname, 'clients')

/** steved mount points anywhere (fsname steved), from our mountinfo. */
const stevedMounts = (): string[] =>
  fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => / - fuse\.steved steved /.test(l))
    .map((l) => l.split(' ')[4])

interface Spawned {
  child: ChildProcess
  file: string
  out(): string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** Start steved with our own stdio handling; always stopped and unmounted in teardown. */
async function spawnSteved(t: Test, file: string, args: string[]): Promise<Spawned> {
  requireFuseRoot()
  const child = spawn(process.execPath, [STEVED_BIN, '--transport', 'fuse', '--path', file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
    for (const m of stevedMounts()) if (m === file || m.startsWith(path.dirname(file))) spawnSync('umount', ['-l', m])
    fs.rmSync(path.dirname(file), { recursive: true, force: true })
  })
  const until = Date.now() + 20000
  while (!/^MAKEFLAGS=/m.test(out)) {
    if (child.exitCode !== null) throw new Error(`steved exited early (${child.exitCode})`)
    if (Date.now() > until) throw new Error('steved did not start within 20 s')
    await new Promise((r) => setTimeout(r, 20))
  }
  return { child, file, out: () => out, exited }
}

const takeOne = async (file: string): Promise<string> =>
  (await run('python3', [path.join(CLIENTS, 'jsclient.py'), file, 'bigread'], { timeoutMs: 20000 })).stdout

t.test('a --path whose directory cannot be created: one line, exit code 2, at once', async (t) => {
  const r = await run(process.execPath, [STEVED_BIN, '--transport', 'fuse', '--path', '/proc/x/jobserver', '-j', '1'], { timeoutMs: 20000 })
  t.equal(r.code, 2, 'usage exit code (before the fix: a 100 % CPU loop that ignored SIGTERM)')
  t.match(r.stderr, /^steved: cannot create the directory \/proc\/x for --path \(ENOENT\)/m)
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  t.notOk(isMounted('/proc/x/jobserver'))
})

t.test('a --path below a regular file: one line, exit code 2', async (t) => {
  const dir = tmpDir(t)
  fs.writeFileSync(path.join(dir, 'f'), '')
  const r = await run(process.execPath, [STEVED_BIN, '--transport', 'fuse', '--path', path.join(dir, 'f', 'sub', 'jobserver'), '-j', '1'], { timeoutMs: 20000 })
  t.equal(r.code, 2)
  t.match(r.stderr, /^steved: cannot use \S+\/f\/sub for --path \(ENOTDIR\)/m)
})

t.test('a broken stderr pipe costs log lines, not the daemon', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'steved-robust-'))
  // -d logs every request: each token below is a log line written into the broken pipe.
  const s = await spawnSteved(t, path.join(dir, 'jobserver'), ['-j', '2', '-d'])
  t.match(await takeOne(s.file), /^len 1$/m, 'served before')
  // Close our end of steved's stderr: its next write fails with EPIPE.
  s.child.stderr!.destroy()
  await new Promise((r) => setTimeout(r, 100))
  s.child.kill('SIGUSR1')
  await new Promise((r) => setTimeout(r, 300))
  t.equal(s.child.exitCode, null, 'steved survived the SIGUSR1 report into a broken pipe')
  for (let i = 0; i < 3; i++) t.match(await takeOne(s.file), /^len 1$/m, `token ${i + 1} after the pipe broke (each one logged)`)
  s.child.kill('SIGUSR1')
  t.match(await takeOne(s.file), /^len 1$/m, 'still serving after a second report')
  t.equal(s.child.exitCode, null, 'still running')
  s.child.kill('SIGTERM')
  const e = await s.exited
  t.same(e, { code: 0, signal: null }, 'clean exit on SIGTERM')
  t.notOk(isMounted(s.file), 'and unmounted')
})

t.test('-v logs what its help promises: start-up, process exits, reclaimed tokens', async (t) => {
  const s = await startSteved(t, { jobs: 2, args: ['-v'] })
  // steved writes the start-up line to stderr just after the MAKEFLAGS line on stdout, which is
  // what startSteved waits for: wait for it too.
  await waitUntil(() => s.stderr().includes('started as pid'), 'the start-up line', 10_000).catch(() => undefined)
  t.match(s.stderr(), new RegExp(`^steved: started as pid ${s.pid} on ${s.path} \\(fuse\\); settings \\{"jobs":2`, 'm'), 'a start-up line with the settings')
  // A holder killed while it holds a token: its exit and the reclaim are logged.
  const h = spawn('bash', ['-c', 'exec 3<"$1"; read -r -N1 -u3 x && echo got && exec sleep 600', 'holder', s.path], { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => h.kill('SIGKILL'))
  await new Promise<void>((r) => h.stdout!.once('data', () => r()))
  h.kill('SIGKILL')
  await waitForStatus(s, () => new RegExp(`^steved: pid ${h.pid} exited holding 1 token: reclaimed$`, 'm').test(s.stderr()), 'the reclaim line')
  t.pass('the reclaim is logged')
  // A client that gives its token back before exiting: its exit is logged without a reclaim.
  const c = await run('python3', [path.join(CLIENTS, 'jsclient.py'), s.path, 'bigread'], { timeoutMs: 20000 })
  t.match(c.stdout, /^len 1$/m)
  await waitForStatus(s, () => / exited$/m.test(s.stderr()), 'an exit line without a reclaim')
  t.pass('a plain exit is logged')
  const help = await run(process.execPath, [STEVED_BIN, '--help'])
  t.match(help.stdout.replace(/\s+/g, ' '), /-v, --verbose log start-up \(settings\), every client process exit and the tokens reclaimed from it/)
})

for (const asUser of [null, 'nobody']) {
t.test(`a rename of a directory above the mount, then SIGTERM: nothing is left mounted${asUser ? ` (--user ${asUser}: the unmount helper does it)` : ''}`, async (t) => {
  const top = fs.mkdtempSync(path.join(os.tmpdir(), 'steved-rename-'))
  fs.mkdirSync(path.join(top, 'a'))
  t.teardown(() => {
    for (const m of stevedMounts()) if (m.startsWith(top)) spawnSync('umount', ['-l', m])
    fs.rmSync(top, { recursive: true, force: true })
  })
  const s = await spawnSteved(t, path.join(top, 'a', 'jobserver'), ['-j', '2', ...(asUser ? ['--user', asUser] : [])])
  let err = ''
  s.child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d))
  t.match(await takeOne(s.file), /^len 1$/m)
  fs.renameSync(path.join(top, 'a'), path.join(top, 'b'))
  const moved = path.join(top, 'b', 'jobserver')
  t.ok(stevedMounts().includes(moved), 'the mount moved with its directory')
  t.match(await takeOne(moved), /^len 1$/m, 'and still serves there')
  s.child.kill('SIGTERM')
  t.same(await s.exited, { code: 0, signal: null }, 'clean exit')
  // The --user helper unmounts once steved has exited: give it a bounded moment.
  const until = Date.now() + 5000
  while (stevedMounts().some((m) => m.startsWith(top)) && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
  t.same(stevedMounts().filter((m) => m.startsWith(top)), [], 'no mount left under the renamed directory (before: a dead mount at b/jobserver)')
  if (!asUser) t.notMatch(err, /failed to unmount/, 'and no unmount failure logged')
})
}
