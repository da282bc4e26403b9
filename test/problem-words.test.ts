// One message per condition (issue 17): a dead mount, a missing path, a path that is not a
// jobserver and a permission refusal read the same in jobclient, stevectl (also `stevectl top`
// when steved stops under it), the emerge shim (which shows jobclient's errors) and the pytest
// plugin. The words live in packages/jobclient/src/errors.ts (Node tools) and in
// pytest_steved_jobserver.plugin.problem_words (Python); the table below holds both to the same
// text, and the rest of the file makes each condition for real and reads what the tools print.
// Needs root and /dev/fuse (real steved mounts; setpriv to run clients as nobody).

import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { describeProblem, problemOf, type JobserverProblem } from '../packages/jobclient/src/errors'
import { run, start } from './helpers/proc'
import { ROOT, startSteved, tmpDir } from './helpers/steved'

const JOBCLIENT = path.join(ROOT, 'packages', 'jobclient', 'bin', 'jobclient.js')
const STEVECTL = path.join(ROOT, 'packages', 'steved', 'bin', 'stevectl.js')
const SHIM = path.join(ROOT, 'packages', 'emerge-shim', 'bin', 'steved-emerge-shim.js')
const PYTHON = path.join(ROOT, '.venv', 'bin', 'python')
const PLUGIN_SRC = path.join(ROOT, 'packages', 'pytest-bridge', 'src')

/** The words, written out once more by hand: a change to either language must change this too. */
const TABLE: { problem: JobserverProblem; path: string; group: string | null; line: string }[] = [
  {
    problem: 'dead-mount',
    path: '/run/steved/jobserver',
    group: null,
    line: '/run/steved/jobserver is a dead steved mount (steved stopped or crashed); start steved again; it clears the dead mount',
  },
  { problem: 'missing', path: '/dev/steve', group: null, line: '/dev/steve does not exist; start steved, or use the path it serves' },
  {
    problem: 'not-a-jobserver',
    path: '/tmp/x',
    group: null,
    line: '/tmp/x is not a jobserver (not a FIFO, a character device or a file steved serves); start steved, or use the path it serves',
  },
  {
    problem: 'permission',
    path: '/dev/steve',
    group: 'jobserver',
    line: 'permission denied on /dev/steve; join group jobserver, which steved serves it to (as root: usermod -aG jobserver USER), then log in again',
  },
  {
    problem: 'permission',
    path: '/run/steved/jobserver',
    group: null,
    line:
      'permission denied on /run/steved/jobserver; steved serves it to root only: as root, create group jobserver (groupadd jobserver), ' +
      'add yourself (usermod -aG jobserver USER) and restart steved, or start it with --mode 0666',
  },
]

t.test('the words: jobclient (TypeScript) and the pytest plugin (Python) say the same', async (t) => {
  for (const row of TABLE) t.equal(describeProblem(row.problem, row.path, row.group), row.line, `TypeScript ${row.problem}`)
  const codes: [string, JobserverProblem | null][] = [
    ['ENOTCONN', 'dead-mount'],
    ['ECONNABORTED', 'dead-mount'],
    ['ENOENT', 'missing'],
    ['ERR_JOBSERVER_NOT_FIFO', 'not-a-jobserver'],
    ['EACCES', 'permission'],
    ['EPERM', 'permission'],
    ['EAGAIN', null],
  ]
  for (const [code, problem] of codes) t.equal(problemOf(code), problem, `TypeScript ${code}`)

  // The plugin's function, imported from the source tree (the venv may hold an installed copy).
  const input = path.join(tmpDir(t), 'table.json')
  fs.writeFileSync(input, JSON.stringify([TABLE, codes]))
  const r = await run(PYTHON, [
    '-c',
    'import json, sys\n' +
      'from pytest_steved_jobserver.plugin import problem_of, problem_words\n' +
      'rows, codes = json.load(open(sys.argv[1]))\n' +
      'print(json.dumps([["; ".join(problem_words(r["problem"], r["path"], r["group"])) for r in rows], [problem_of(c) for c, _ in codes]]))\n',
    input,
  ], { env: { ...process.env, PYTHONPATH: PLUGIN_SRC } })
  t.equal(r.code, 0, `python ran: ${r.stderr}`)
  const [lines, problems] = JSON.parse(r.stdout) as [string[], (string | null)[]]
  TABLE.forEach((row, i) => t.equal(lines[i], row.line, `Python ${row.problem}`))
  codes.forEach(([code, problem], i) => t.equal(problems[i], problem, `Python ${code}`))
})

/** jobclient run and stevectl status against `p`, as nobody or root; their stderr (jobclient adds the code). */
async function bothTools(p: string, asNobody = false): Promise<{ jobclient: string; stevectl: string; codes: (number | null)[] }> {
  const makeflags = ` -j --jobserver-auth=fifo:${p}`
  // nobody gets a bare environment through env -i: tap's process hooks (which it adds to every
  // child's environment) write into the checkout, which nobody may not.
  const wrap = (args: string[]): [string, string[]] =>
    asNobody
      ? ['setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', 'env', '-i', `PATH=${process.env.PATH}`, `MAKEFLAGS=${makeflags}`, process.execPath, ...args]]
      : [process.execPath, args]
  const env: NodeJS.ProcessEnv = { ...process.env, MAKEFLAGS: makeflags }
  const j = await run(...wrap([JOBCLIENT, 'run', '--', 'true']), { env })
  const c = await run(...wrap([STEVECTL, '--device', p, 'status']), { env })
  return { jobclient: j.stderr, stevectl: c.stderr, codes: [j.code, c.code] }
}

/** The emerge shim's setup phase against `p` (a Portage-like environment); its warning line. */
async function shim(t: Tap.Test, p: string): Promise<string> {
  const dir = tmpDir(t)
  fs.mkdirSync(path.join(dir, 'build'))
  fs.mkdirSync(path.join(dir, 'temp'))
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    PORTAGE_BUILDDIR: path.join(dir, 'build'),
    T: path.join(dir, 'temp'),
    CATEGORY: 'app-misc',
    PF: 'words-1',
    EBUILD_PHASE: 'setup',
    MAKEFLAGS: ` -j --jobserver-auth=fifo:${p}`,
  }
  const r = await run(process.execPath, [SHIM, 'phase', '--pid', String(process.pid)], { env })
  t.equal(r.code, 0, 'the shim never fails the build')
  return r.stdout
}

t.test('a missing path and a plain file', async (t) => {
  const dir = tmpDir(t)
  const missing = path.join(dir, 'nothing-here')
  let got = await bothTools(missing)
  t.same(got.codes, [1, 1], 'both exit 1')
  t.equal(got.jobclient, `jobclient: error: ${describeProblem('missing', missing)} [ENOENT]\n`)
  t.equal(got.stevectl, `stevectl: ${describeProblem('missing', missing)}\n`)
  t.match(await shim(t, missing), `warn jobserver: the holder did not start (error ${describeProblem('missing', missing)} [ENOENT])`, 'the emerge shim')

  const plain = path.join(dir, 'plain')
  fs.writeFileSync(plain, '')
  got = await bothTools(plain)
  t.same(got.codes, [1, 1], 'both exit 1')
  t.equal(got.jobclient, `jobclient: error: ${describeProblem('not-a-jobserver', plain)} [ERR_JOBSERVER_NOT_FIFO]\n`)
  t.equal(got.stevectl, `stevectl: ${describeProblem('not-a-jobserver', plain)}\n`)
  t.match(await shim(t, plain), `(error ${describeProblem('not-a-jobserver', plain)} [ERR_JOBSERVER_NOT_FIFO])`, 'the emerge shim')
})

t.test('permission: root only (0600), and a group (0660 --group users)', async (t) => {
  const rootOnly = await startSteved(t, { jobs: 2, args: ['--mode', '0600'] })
  fs.chmodSync(path.dirname(rootOnly.path), 0o755)
  let got = await bothTools(rootOnly.path, true)
  t.same(got.codes, [1, 1], 'both exit 1')
  t.equal(got.jobclient, `jobclient: error: ${describeProblem('permission', rootOnly.path, null)} [EACCES]\n`)
  t.equal(got.stevectl, `stevectl: ${describeProblem('permission', rootOnly.path, null)}\n`)
  await rootOnly.stop()

  const grouped = await startSteved(t, { jobs: 2, args: ['--mode', '0660', '--group', 'users'] })
  fs.chmodSync(path.dirname(grouped.path), 0o755)
  got = await bothTools(grouped.path, true)
  t.same(got.codes, [1, 1], 'both exit 1')
  t.equal(got.jobclient, `jobclient: error: ${describeProblem('permission', grouped.path, 'users')} [EACCES]\n`)
  t.equal(got.stevectl, `stevectl: ${describeProblem('permission', grouped.path, 'users')}\n`)
})

t.test('a dead mount (steved SIGKILLed), and stevectl top when steved stops under it', async (t) => {
  const s = await startSteved(t, { jobs: 2 })
  const top = start(t, process.execPath, [STEVECTL, '--device', s.path, 'top', '--interval', '0.1'])
  await top.waitFor(/PID/)
  await s.stop()
  const done = await top.exited
  t.equal(done.code, 1, 'top exits 1')
  t.equal(done.stderr, `stevectl: ${describeProblem('dead-mount', s.path)}\n`, 'top says the dead-mount words')

  const dead = await startSteved(t, { jobs: 2 })
  dead.child.kill('SIGKILL')
  await new Promise((r) => (dead.child.exitCode === null && dead.child.signalCode === null ? dead.child.once('exit', r) : r(null)))
  const got = await bothTools(dead.path)
  t.same(got.codes, [1, 1], 'both exit 1')
  t.equal(got.jobclient, `jobclient: error: ${describeProblem('dead-mount', dead.path)} [ENOTCONN]\n`)
  t.equal(got.stevectl, `stevectl: ${describeProblem('dead-mount', dead.path)}\n`)
  t.match(await shim(t, dead.path), `(error ${describeProblem('dead-mount', dead.path)} [ENOTCONN])`, 'the emerge shim')
})
