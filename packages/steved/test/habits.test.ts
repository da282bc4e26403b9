// steve's habits: the daemon is called steved (pidof, pkill, killall find it), `stevie` is
// stevectl under steve's name, -V/--version everywhere, and typos get "did you mean". Against a
// real steved on a FUSE file; needs root and /dev/fuse.

import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { run } from '../../../test/helpers/proc'
import { ROOT, STEVED_BIN, startSteved, tmpDir } from '../../../test/helpers/steved'

const CTL = path.join(__dirname, '..', 'bin', 'stevectl.js')
const STEVIE = path.join(__dirname, '..', 'bin', 'stevie.js')
const JOBCLIENT = path.join(ROOT, 'packages', 'jobclient', 'bin', 'jobclient.js')
const VERSION = (require('../package.json') as { version: string }).version
const node = (...args: string[]) => run(process.execPath, args, { timeoutMs: 30000 })

t.test('a live steved is called steved: /proc comm and cmdline, pidof, pgrep, killall, pkill -USR1', async (t) => {
  const s = await startSteved(t, { jobs: 2 })
  t.equal(fs.readFileSync(`/proc/${s.pid}/comm`, 'utf8'), 'steved\n', 'comm (what pkill and killall read)')
  const cmdline = fs.readFileSync(`/proc/${s.pid}/cmdline`, 'utf8')
  t.match(cmdline, /^steved --transport fuse --path \S+ -j 2/, 'cmdline (what pidof and ps read) keeps the arguments')

  const pidof = await run('pidof', ['steved'])
  t.equal(pidof.code, 0, 'pidof steved finds something')
  t.ok(pidof.stdout.trim().split(/\s+/).map(Number).includes(s.pid), `pidof steved lists ${s.pid}: ${pidof.stdout}`)
  const pgrep = await run('pgrep', ['-x', '-P', String(process.pid), 'steved'])
  t.equal(pgrep.stdout.trim(), String(s.pid), 'pgrep -x steved (comm match)')
  // Signal 0 only checks: other steveds on this machine must not be disturbed.
  t.equal((await run('killall', ['-0', 'steved'])).code, 0, 'killall finds steved')

  // Only our own child: -P limits pkill to the steved this test started.
  const before = s.stderr().length
  t.equal((await run('pkill', ['-USR1', '-x', '-P', String(process.pid), 'steved'])).code, 0, 'pkill -USR1 steved signalled it')
  const until = Date.now() + 10000
  while (!/since start:/.test(s.stderr().slice(before)) && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
  t.match(s.stderr().slice(before), /since start: \d+ granted/, 'and it printed its report')
})

t.test('-V and --version in steved, stevectl, stevie and jobclient', async (t) => {
  for (const bin of [STEVED_BIN, CTL, STEVIE, JOBCLIENT]) {
    for (const flag of ['-V', '--version']) {
      const r = await node(bin, flag)
      t.equal(r.code, 0, `${path.basename(bin)} ${flag}: ${r.stderr}`)
      t.equal(r.stdout.trim().split(/\s+/).pop(), VERSION, `${path.basename(bin)} ${flag} prints ${VERSION}`)
    }
  }
})

t.test('typos get one line with "did you mean"; a real program of that name still runs', async (t) => {
  const jobz = await node(STEVED_BIN, '--jobz', '3')
  t.equal(jobz.code, 2)
  t.equal(jobz.stderr, "steved: unknown option '--jobz'; did you mean --jobs? (see 'steved --help')\n", 'steved: one line')

  const stauts = await node(CTL, 'stauts')
  t.equal(stauts.code, 2, 'stevectl stauts is a usage error, not an attempt to run "stauts"')
  t.match(stauts.stderr, /^stevectl: 'stauts' is neither a stevectl command nor a program on PATH; did you mean 'status'\? \(see stevectl --help\)\n$/)
  t.match((await node(CTL, '--get-tokns')).stderr, /unknown setting 'tokns'; did you mean 'tokens'\?/)
  t.match((await node(CTL, '--devise', 'x')).stderr, /unknown option '--devise'; did you mean '--device'\?/)
  t.match((await node(STEVIE, 'statsu')).stderr, /^stevie: 'statsu' is neither a stevie command nor a program on PATH; did you mean 'status'\?/, 'stevie says stevie')

  // A word near a command that *is* a program on PATH is run, as before.
  const dir = tmpDir(t)
  fs.writeFileSync(path.join(dir, 'stats'), '#!/bin/sh\necho ran-stats\n', { mode: 0o755 })
  const s = await startSteved(t, { jobs: 1 })
  const ran = await run(process.execPath, [CTL, '--device', s.path, 'stats'], { timeoutMs: 30000, env: { ...process.env, PATH: `${dir}:${process.env.PATH}` } })
  t.equal(ran.code, 0, ran.stderr)
  t.equal(ran.stdout, 'ran-stats\n', 'stats on PATH runs under a token')

  const runn = await node(JOBCLIENT, 'runn')
  t.equal(runn.code, 2)
  t.equal(runn.stderr, "jobclient: error: unknown command 'runn'; did you mean run? (see 'jobclient --help')\n", 'jobclient: subcommands')
  const tokns = await node(JOBCLIENT, 'run', '--tokns', '2', '--', 'true')
  t.equal(tokns.code, 2)
  t.match(tokns.stderr, /unknown option '--tokns'; did you mean --tokens\?/, 'jobclient: options')
})

t.test('stevie is stevectl under steve\'s name: stevie --get-jobs, -t, stevie CMD; jobclient is named jobclient', async (t) => {
  const s = await startSteved(t, { jobs: 3 })
  const env = { ...process.env, MAKEFLAGS: `--jobserver-auth=fifo:${s.path}` }
  const get = await run(process.execPath, [STEVIE, '--get-jobs', '-t'], { timeoutMs: 30000, env })
  t.equal(get.code, 0, get.stderr)
  t.equal(get.stdout, '3\n3\n', 'stevie --get-jobs -t: jobs, then free tokens, from MAKEFLAGS')
  const cmd = await run(process.execPath, [STEVIE, 'sh', '-c', 'echo "$MAKEFLAGS"; cat /proc/$PPID/comm'], { timeoutMs: 30000, env })
  t.equal(cmd.code, 0, cmd.stderr)
  t.match(cmd.stdout, new RegExp(`--jobserver-auth=fifo:${s.path}`), 'stevie CMD runs CMD with the pool in MAKEFLAGS')
  t.match(cmd.stdout, /^jobclient$/m, 'holding the token in a process called jobclient')
  const rep = await s.status()
  t.same([rep.counters.granted, rep.counters.returned], [1, 1], 'one token taken and given back')
})
