// Settings the user got wrong (issue 17): a bad value in the configuration file is reported with
// the file, line and column in the file's words (not as the command-line flag it becomes), and
// min-jobs above jobs is refused wherever the two meet: flags, the file, SIGHUP, stevectl
// --set-* and a raw STEVED_IOC_SET (EINVAL). Needs root and /dev/fuse for the live parts.

import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { run } from '../../../test/helpers/proc'
import { startSteved, tmpDir } from '../../../test/helpers/steved'

const STEVED = path.join(__dirname, '..', 'bin', 'steved.js')
const CTL = path.join(__dirname, '..', 'bin', 'stevectl.js')
const ctl = (device: string, ...args: string[]) => run(process.execPath, [CTL, '--device', device, ...args], { timeoutMs: 20000 })
const RULE = 'it counts tokens of the pool that may be out whatever the load'

/** steved with these arguments, expected to refuse them before serving anything. */
async function refused(t: Tap.Test, args: string[]): Promise<string> {
  const dir = tmpDir(t)
  const r = await run(process.execPath, [STEVED, '--transport', 'fuse', '--path', path.join(dir, 'jobserver'), ...args], { timeoutMs: 20000 })
  t.equal(r.code, 2, `exit 2 for ${args.join(' ')}`)
  t.equal(r.stdout, '', 'nothing served')
  t.equal(r.stderr.split('\n').length, 2, 'one line')
  return r.stderr
}

t.test('the configuration file: a bad value with its file, line and column, in its own words', async (t) => {
  const dir = tmpDir(t)
  const cfg = path.join(dir, 'steved.toml')
  fs.writeFileSync(cfg, '# pool\njobs = 0\n')
  t.equal(await refused(t, ['--config', cfg]), `steved: ${cfg}:2:8: 'jobs' must be a whole number from 1 to 1000000 (got '0') (fix the file)\n`)
  fs.writeFileSync(cfg, 'jobs = 4\n  load-average = -1\n')
  t.match(await refused(t, ['--config', cfg]), `steved: ${cfg}:2:18: 'load-average' must be a decimal number > 0`)
  fs.writeFileSync(cfg, 'transport = "tcp"\n')
  t.match(await refused(t, ['--config', cfg]), `steved: ${cfg}:1:13: 'transport' is invalid (got 'tcp'): Allowed choices are auto, fuse, cuse.`)
  // The same value on the command line keeps the flag's words.
  t.match(await refused(t, ['-j', '0']), /^steved: -j\/--jobs must be a whole number from 1 to 1000000 \(got '0'\)/)
})

t.test('min-jobs above jobs: flags, the file, the two together', async (t) => {
  t.equal(await refused(t, ['-m', '5', '-j', '2']), `steved: min-jobs (5) is more than jobs (2): ${RULE}; lower min-jobs or raise jobs (see 'steved --help')\n`)
  const dir = tmpDir(t)
  const cfg = path.join(dir, 'steved.toml')
  fs.writeFileSync(cfg, 'jobs = 2\nmin-jobs = 5\n')
  t.equal(await refused(t, ['--config', cfg]), `steved: ${cfg}:2:12: min-jobs (5) is more than jobs (2): ${RULE} (fix the file: lower min-jobs or raise jobs)\n`)
  fs.writeFileSync(cfg, 'min-jobs = 5\n')
  t.match(await refused(t, ['--config', cfg, '-j', '3']), `min-jobs (5) is more than jobs (3)`, 'the file with a flag')
  // Equal is fine: every token may be out whatever the load.
  const s = await startSteved(t, { jobs: 2, args: ['-m', '2'] })
  t.equal((await ctl(s.path, '--get-jobs', '--get-min-jobs')).stdout, '2\n2\n')
})

t.test('min-jobs above jobs at runtime: SIGHUP, stevectl --set-*, a raw STEVED_IOC_SET', async (t) => {
  const dir = tmpDir(t)
  const cfg = path.join(dir, 'steved.toml')
  fs.writeFileSync(cfg, 'jobs = 3\nmin-jobs = 1\n')
  const s = await startSteved(t, { jobs: null, dir, args: ['--config', cfg] })
  fs.writeFileSync(cfg, 'jobs = 2\nmin-jobs = 5\n')
  s.child.kill('SIGHUP')
  const until = Date.now() + 10000
  while (!/configuration rejected/.test(s.stderr()) && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
  t.match(s.stderr(), `steved: configuration rejected, settings unchanged: ${cfg}:2:12: min-jobs (5) is more than jobs (2)`)
  t.equal((await ctl(s.path, '--get-jobs', '--get-min-jobs')).stdout, '3\n1\n', 'the settings in force stay')

  let r = await ctl(s.path, '--set-min-jobs', '4')
  t.equal(r.code, 2)
  t.equal(r.stderr, `stevectl: cannot set min-jobs to 4: min-jobs (4) is more than jobs (3): ${RULE}; raise jobs first\n`)
  r = await ctl(s.path, '--set-min-jobs', '3')
  t.equal(r.code, 0, 'min-jobs = jobs is fine')
  r = await ctl(s.path, '--set-jobs', '2')
  t.equal(r.code, 2)
  t.equal(r.stderr, `stevectl: cannot set jobs to 2: min-jobs (3) is more than jobs (2): ${RULE}; lower min-jobs first\n`)
  r = await ctl(s.path, '--set-min-jobs', '1', '--set-jobs', '2')
  t.equal(r.code, 0, 'in the right order, both go through')
  t.equal((await ctl(s.path, '--get-jobs', '--get-min-jobs')).stdout, '2\n1\n')

  // A value set at runtime is kept over an unchanged file value; a reload whose new jobs falls
  // below it is refused too.
  t.equal((await ctl(s.path, '--set-min-jobs', '2')).code, 0)
  fs.writeFileSync(cfg, 'jobs = 1\nmin-jobs = 1\n')
  const before = s.stderr().length
  s.child.kill('SIGHUP')
  const until2 = Date.now() + 10000
  while (!/configuration (rejected|reloaded)/.test(s.stderr().slice(before)) && Date.now() < until2) await new Promise((r) => setTimeout(r, 50))
  t.match(s.stderr().slice(before), 'configuration rejected, settings unchanged: min-jobs (2) is more than jobs (1)', 'SIGHUP against a kept runtime value')
  t.equal((await ctl(s.path, '--get-jobs', '--get-min-jobs')).stdout, '2\n2\n', 'the settings in force stay')
  t.equal((await ctl(s.path, '--set-min-jobs', '1')).code, 0)

  // A client that skips stevectl's check meets steved's: min-jobs (key 1) = 5 answers EINVAL.
  const py = [
    'import fcntl, os, struct, sys, errno',
    'fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)',
    'req = (1 << 30) | (16 << 16) | (0x6a << 8) | 0x02',
    'try:',
    '    fcntl.ioctl(fd, req, struct.pack("<IId", 1, 0, 5.0))',
    '    print("ok")',
    'except OSError as e:',
    '    print(errno.errorcode[e.errno])',
  ].join('\n')
  const raw = await run('python3', ['-c', py, s.path])
  t.equal(raw.stdout.trim(), 'EINVAL', 'steved refuses it too')
  t.equal((await ctl(s.path, '--get-min-jobs')).stdout, '1\n', 'unchanged')
})
