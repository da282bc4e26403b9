// Command-line handling: options named as steve names them, bad input rejected with one
// clear line and exit 2 (usage) or 1 (runtime), and nothing left mounted.

import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { parseArgs } from '../src/cli'
import { StevedError } from '../src/errors'
import { run, start } from '../../../test/helpers/proc'
import { isMounted, tmpDir } from '../../../test/helpers/steved'

const BIN = path.join(__dirname, '..', 'bin', 'steved.js')
const steved = (...args: string[]) => run(process.execPath, [BIN, ...args], { timeoutMs: 20000 })

t.test('steve-compatible options parse into the pool configuration', async (t) => {
  const r = parseArgs(['-j', '8', '-l', '6.5', '-m', '2', '-r', '1.5', '-a', '2048', '-p', '3', '--dev-name', 'steve', '--transport', 'fuse', '--path', '/run/x', '-v'])!
  t.same(r.options.pool, {
    jobs: 8,
    loadAverage: 6.5,
    minJobs: 2,
    loadRecheckMs: 1500,
    minMemoryAvailMiB: 2048,
    perProcessLimit: 3,
    reservationExpiryMs: 1000,
    maxCpuPressure: null,
    maxMemoryPressure: null,
    maxIoPressure: null,
  })
  t.equal(r.options.transport, 'fuse')
  t.equal(r.options.path, '/run/x')
  t.equal(r.verbose, true)
  const long = parseArgs(['--jobs=4', '--load-average=3', '--min-jobs=0', '--load-recheck-timeout=2', '--min-memory-avail=0', '--per-process-limit=1'])!
  t.match(long.options.pool, { jobs: 4, loadAverage: 3, minJobs: 0, loadRecheckMs: 2000, minMemoryAvailMiB: 0, perProcessLimit: 1 })
  const d = parseArgs([])!
  t.equal(d.options.transport, 'auto')
  t.equal(d.options.devName, 'steve')
  t.equal(d.options.path, '/run/steved/jobserver')
  t.equal(d.options.pool.minJobs, 1)
  t.equal(d.options.pool.loadRecheckMs, 500)
  t.ok(d.options.pool.jobs >= 1, 'jobs defaults to the online CPUs')
})

t.test('pressure limits (PSI some avg10, %) and the cgroup they are read from', async (t) => {
  const r = parseArgs(['--max-memory-pressure', '10', '--max-io-pressure=2.5', '--max-cpu-pressure', '0', '--pressure-cgroup', '/sys/fs/cgroup/unified/build'])!
  t.match(r.options.pool, { maxMemoryPressure: 10, maxIoPressure: 2.5, maxCpuPressure: 0 })
  t.equal(r.options.pressureDir, '/sys/fs/cgroup/unified/build')
  const d = parseArgs([])!
  t.match(d.options.pool, { maxCpuPressure: null, maxMemoryPressure: null, maxIoPressure: null }, 'no limits by default')
  t.equal(d.options.pressureDir, undefined, 'read from /proc/pressure by default')
  for (const bad of [['--max-memory-pressure', '101'], ['--max-cpu-pressure', '-1'], ['--max-io-pressure', 'high'], ['--pressure-cgroup', '']]) {
    t.throws(() => parseArgs(bad), { code: 'ERR_STEVED_USAGE' }, bad.join(' '))
  }
  const missing = await steved('--transport', 'fuse', '--path', '/tmp/steved-never-mounted', '--pressure-cgroup', '/nonexistent-cgroup')
  t.equal(missing.code, 2, 'a cgroup directory without pressure files is a usage error')
  t.match(missing.stderr, /^steved: --pressure-cgroup: cannot read \/nonexistent-cgroup\/cpu\.pressure/)
  t.equal(missing.stderr.trim().split('\n').length, 1, 'one line')
})

t.test('bad values are usage errors', async (t) => {
  const bad: string[][] = [
    ['-j', '0'],
    ['-j', 'x'],
    ['-j', '2.5'],
    ['-l', '-1'],
    ['-l', '0'],
    ['-m', '-1'],
    ['-r', '0'],
    ['-a', 'lots'],
    ['-p', '0'],
    ['--transport', 'pipe'],
    ['--mode', '999'],
    ['--dev-name', 'a/b'],
    ['--path', '/tmp/with space'],
    ['--no-such-flag'],
    ['extra-argument'],
    // Issue 14: out of range, non-decimal and empty values.
    ['-j', '9'.repeat(400)],
    ['-j', '1000001'],
    ['-m', '1000001'],
    ['-p', '1000001'],
    ['-l', '0x10'],
    ['-l', '1e3'],
    ['-l', 'Infinity'],
    ['-l', '9'.repeat(400)],
    ['-a', '0x10'],
    ['-a', ' '],
    ['-r', '86400.001'],
    ['-r', '3000000'],
    ['--reservation-expiry', '3000000'],
    ['--reservation-expiry', '0x10'],
    ['--group', ''],
    ['--admin-group', ''],
    ['--admin-group', '  '],
    ['--user', ''],
  ]
  for (const argv of bad) {
    t.throws(() => parseArgs(argv), { code: 'ERR_STEVED_USAGE' }, argv.join(' '))
  }
  const edge = parseArgs(['-j', '1000000', '-r', '86400', '--reservation-expiry', '86400', '-l', '.5', '-a', '16.'])!
  t.match(edge.options.pool, { jobs: 1000000, loadRecheckMs: 86400000, reservationExpiryMs: 86400000, loadAverage: 0.5, minMemoryAvailMiB: 16 }, 'the bounds themselves are allowed')
  t.ok(new StevedError('ERR_STEVED_USAGE', 'x').exitCode === 2)
  t.ok(new StevedError('ERR_STEVED_BUSY', 'x').exitCode === 1)
})

t.test('--help explains, --version prints the version', async (t) => {
  const h = await steved('--help')
  t.equal(h.code, 0)
  for (const flag of ['--jobs', '--load-average', '--min-jobs', '--load-recheck-timeout', '--min-memory-avail', '--per-process-limit', '--dev-name', '--user', '--transport', '--path', '--verbose', '--debug']) {
    t.match(h.stdout, flag)
  }
  t.match(h.stdout, /MAKEFLAGS=--jobserver-auth=fifo:PATH/)
  const v = await steved('--version')
  t.equal(v.code, 0)
  t.match(v.stdout, /^\d+\.\d+\.\d+$/m)
})

t.test('the process prints one line and exits 2 for bad input', async (t) => {
  for (const argv of [['-j', '0'], ['--bogus'], ['-l', 'high']]) {
    const r = await steved(...argv)
    t.equal(r.code, 2, argv.join(' '))
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
    t.match(r.stderr, /^steved: .*see 'steved --help'/)
  }
})

t.test('--transport cuse without /dev/cuse is a runtime error (exit 1) naming the fix', async (t) => {
  t.ok(!fs.existsSync('/dev/cuse'), 'this kernel has no CUSE (the VM suite covers CUSE)')
  const r = await steved('--transport', 'cuse', '--dev-name', 'steve-cli-test')
  t.equal(r.code, 1)
  t.match(r.stderr, /\/dev\/cuse does not exist.*modprobe cuse.*--transport fuse/)
})

t.test('a --path that is a directory is refused, and nothing is mounted', async (t) => {
  const dir = tmpDir(t)
  const r = await steved('--transport', 'fuse', '--path', dir, '-j', '1')
  t.equal(r.code, 2)
  t.match(r.stderr, /not a regular file/)
  t.notOk(isMounted(dir))
})

t.test('auto picks FUSE here and says so, with the MAKEFLAGS line', async (t) => {
  const dir = tmpDir(t)
  const file = path.join(dir, 'js')
  const s = start(t, process.execPath, [BIN, '--path', file, '-j', '2'])
  await s.waitFor(/MAKEFLAGS=--jobserver-auth=fifo:.*\n/)
  t.match(s.output(), new RegExp(`serving 2 tokens over FUSE file ${file}\\nMAKEFLAGS=--jobserver-auth=fifo:${file}\\n`))
  s.child.kill('SIGTERM')
  const d = await s.exited
  t.equal(d.code, 0)
  t.notOk(isMounted(file), 'unmounted on SIGTERM')
})

t.test('an unprivileged user without user_allow_other is told to use root (exit 1)', async (t) => {
  const dir = tmpDir(t)
  fs.chmodSync(dir, 0o777)
  const r = await run('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, BIN, '--transport', 'fuse', '--path', path.join(dir, 'js'), '-j', '1'], {
    timeoutMs: 20000,
    env: { PATH: process.env.PATH },
  })
  t.equal(r.code, 1)
  t.match(r.stderr, /needs root.*--user.*user_allow_other/)
  t.notOk(isMounted(path.join(dir, 'js')))
})
