// `jobclient run`: the real CLI (bin/jobclient.js) as a process, against FIFO pools and under
// real make: help and usage errors, finding the jobserver, the child's MAKEFLAGS, exit
// statuses, tokens held exactly while the command runs, signals, the -j warning, and makes
// inside that really share the pool (make 4.4.1, and Debian's make 4.3 through fds).
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { maxOverlap, parseJobLog } from '../../../test/helpers/joblog'
import { run, start } from '../../../test/helpers/proc'
import { jobsFlagWarning } from '../dist/run'
import { FIXTURES, JOBCLIENT_BIN, MAKE44, makePool, tmpDir, waitUntil } from './helpers/pool'

const WORKER = path.join(FIXTURES, 'make-worker.js')
const NODE = process.execPath
/** An environment with no jobserver and no steved to fall back on. */
const BARE: NodeJS.ProcessEnv = { PATH: process.env.PATH, JOBCLIENT_DEFAULT_PATHS: '/nonexistent/steved' }

function jobclient(args: string[], env: NodeJS.ProcessEnv) {
  return run(NODE, [JOBCLIENT_BIN, ...args], { env, timeoutMs: 60000 })
}

const fifoEnv = (poolPath: string, extra: NodeJS.ProcessEnv = {}) => ({
  ...BARE,
  MAKEFLAGS: ` --jobserver-auth=fifo:${poolPath}`,
  ...extra,
})

t.test('--help explains; exit 0', async (t) => {
  const top = await jobclient(['--help'], BARE)
  t.equal(top.code, 0)
  t.match(top.stdout, /run \[options\] <command\.\.\.>/)
  t.match(top.stdout, /agent/)
  t.match(top.stdout, /MAKEFLAGS/)
  const r = await jobclient(['run', '--help'], BARE)
  t.equal(r.code, 0)
  t.match(r.stdout, /--jobserver-auth=fifo:PATH/)
  t.match(r.stdout, /Exit status/)
  t.match(r.stdout, /-n, --tokens <N>/)
  const a = await jobclient(['agent', '--help'], BARE)
  t.equal(a.code, 0)
  t.match(a.stdout, /acquire \[N\]\s+-> ok ID/)
})

t.test('usage errors: one line on stderr, exit 2', async (t) => {
  const cases: Array<[string[], string]> = [
    [['--bogus'], 'unknown global option'],
    [['run', '--bogus', '--', 'true'], 'unknown run option'],
    [['run'], 'no command'],
    [['run', '-n', '0', '--', 'true'], '-n 0'],
    [['run', '-n', 'two', '--', 'true'], '-n not a number'],
    [['agent', 'extra'], 'agent takes no arguments'],
    [['frobnicate'], 'unknown command'],
    [[], 'no command at all'],
  ]
  for (const [args, why] of cases) {
    const r = await jobclient(args, BARE)
    t.equal(r.code, 2, `${why}: exit 2`)
    if (args.length > 0) {
      t.equal(r.stderr.trim().split('\n').length, 1, `${why}: one line (${r.stderr.trim()})`)
      t.match(r.stderr, /^jobclient: error: /, `${why}: says what is wrong`)
    }
  }
})

t.test('no jobserver anywhere: a clear error, exit 1', async (t) => {
  const r = await jobclient(['run', '--', 'true'], BARE)
  t.equal(r.code, 1)
  t.match(r.stderr, /ERR_JOBSERVER_NO_ENV/)
  t.match(r.stderr, /\/nonexistent\/steved/, 'names the paths it looked at')
})

t.test('the jobserver comes from MAKEFLAGS, --jobserver, or steved default paths', async (t) => {
  const pool = makePool(t, 'a')
  const show = ['--', 'sh', '-c', 'printf "%s" "$MAKEFLAGS"']
  const fromEnv = await jobclient(['run', ...show], fifoEnv(pool.path))
  t.equal(fromEnv.stdout, ` --jobserver-auth=fifo:${pool.path}`)
  const fromFlag = await jobclient(['run', '--jobserver', pool.path, ...show], BARE)
  t.equal(fromFlag.stdout, ` --jobserver-auth=fifo:${pool.path}`)
  const fallback = await jobclient(['run', ...show], { ...BARE, JOBCLIENT_DEFAULT_PATHS: `/nonexistent/a:${pool.path}` })
  t.equal(fallback.code, 0, fallback.stderr)
  t.equal(fallback.stdout, ` --jobserver-auth=fifo:${pool.path}`, 'the first existing default path')
  t.equal(pool.count(), 1, 'every run gave its token back')
})

t.test("the child's MAKEFLAGS: same jobserver, no -j, other flags and variables kept", async (t) => {
  const pool = makePool(t, 'a')
  const env = {
    ...BARE,
    MAKEFLAGS: `ks -j8 --jobserver-auth=fifo:${pool.path} -- CC=clang`,
    CARGO_MAKEFLAGS: `-j --jobserver-fds=fifo:${pool.path} --jobserver-auth=fifo:${pool.path}`,
  }
  const r = await jobclient(['run', '--', 'sh', '-c', 'printf "%s|%s|%s" "$MAKEFLAGS" "$CARGO_MAKEFLAGS" "${MFLAGS-unset}"'], env)
  t.equal(r.code, 0, r.stderr)
  const [mf, cargo, mflags] = r.stdout.split('|')
  t.equal(mf, `ks --jobserver-auth=fifo:${pool.path} -- CC=clang`)
  t.equal(cargo, ` --jobserver-auth=fifo:${pool.path}`, 'CARGO_MAKEFLAGS agrees (cargo reads it first)')
  t.equal(mflags, 'unset', 'MFLAGS is not invented')
})

t.test("exit status: the command's, 128+signal, 127 not found, 126 not runnable", async (t) => {
  const pool = makePool(t, 'a')
  const dir = tmpDir(t)
  const notExec = path.join(dir, 'script')
  fs.writeFileSync(notExec, '#!/bin/sh\n')
  const cases: Array<[string[], number, string]> = [
    [['sh', '-c', 'exit 0'], 0, 'success'],
    [['sh', '-c', 'exit 7'], 7, 'a failure status'],
    [['sh', '-c', 'kill -TERM $$'], 143, 'killed by SIGTERM'],
    [['sh', '-c', 'kill -KILL $$'], 137, 'killed by SIGKILL'],
    [['/nonexistent/command'], 127, 'not found'],
    [[notExec], 126, 'not executable'],
  ]
  for (const [cmd, status, why] of cases) {
    const r = await jobclient(['run', '--', ...cmd], fifoEnv(pool.path))
    t.equal(r.code, status, `${why}: ${status}`)
    t.equal(pool.count(), 1, `${why}: token back`)
  }
})

t.test('the tokens are held exactly while the command runs', async (t) => {
  for (const n of [1, 3]) {
    const pool = makePool(t, 'abcd')
    const child = start(t, NODE, [JOBCLIENT_BIN, 'run', '-n', String(n), '--', 'sh', '-c', 'echo started; read x; echo finished'], {
      env: fifoEnv(pool.path),
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    await child.waitFor(/^started$/m)
    t.equal(pool.count(), 4 - n, `-n ${n}: ${n} held while it runs`)
    child.child.stdin!.end('\n')
    const done = await child.exited
    t.equal(done.code, 0)
    t.equal(pool.count(), 4, `-n ${n}: all back after`)
  }
})

t.test('SIGTERM to jobclient goes to the command; tokens come back after it exits', async (t) => {
  const pool = makePool(t, 'ab')
  const script = 'trap "echo got-term; exit 5" TERM; echo started; while :; do sleep 0.05; done'
  const child = start(t, NODE, [JOBCLIENT_BIN, 'run', '--', 'sh', '-c', script], { env: fifoEnv(pool.path) })
  await child.waitFor(/^started$/m)
  t.equal(pool.count(), 1)
  child.child.kill('SIGTERM')
  const done = await child.exited
  t.match(done.stdout, /got-term/, 'the command saw the signal')
  t.equal(done.code, 5, "jobclient exits with the command's status")
  t.equal(pool.count(), 2)
})

t.test('a signal while waiting for a token: exit 128+signal, nothing run, nothing held', async (t) => {
  const pool = makePool(t, '')
  const dir = tmpDir(t)
  const marker = path.join(dir, 'ran')
  const child = start(t, NODE, [JOBCLIENT_BIN, 'run', '--', 'touch', marker], {
    env: fifoEnv(pool.path, { NODE_DEBUG: 'jobclient' }),
  })
  let stderr = ''
  child.child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  await waitUntil(() => /waiting for 1 token/.test(stderr), 'jobclient to wait for a token')
  child.child.kill('SIGINT')
  const done = await child.exited
  t.equal(done.code, 130)
  t.notOk(fs.existsSync(marker), 'the command never ran')
  pool.put('z')
  t.equal(pool.count(), 1, 'and no token was taken')
})

t.test('jobsFlagWarning: make and ninja with -j, and nothing else', async (t) => {
  const yes = [
    ['make', '-j4'],
    ['make', '-j'],
    ['/usr/bin/gmake', '-kj8'],
    ['make', '--jobs=3'],
    ['make', '--jobs'],
    ['make-4.4', '-j', '2'],
    ['ninja', '-j8'],
    ['ninja', '-C', 'build', '-j', '4'],
  ]
  const no = [
    ['make'],
    ['make', '-k', 'all'],
    ['make', '-Cproj'],
    ['make', '-C', '-j'],
    ['make', '--', '-j4'],
    ['cargo', 'build', '-j4'],
    ['ninja', '-C', 'build'],
    ['sh', '-c', 'make -j4'],
  ]
  for (const argv of yes) t.match(jobsFlagWarning(argv), /WARN_JOBSERVER_JOBS_FLAG/, argv.join(' '))
  for (const argv of no) t.equal(jobsFlagWarning(argv), undefined, argv.join(' '))
})

t.test('`jobclient run make -j2` warns, and make confirms it dropped the jobserver', async (t) => {
  const pool = makePool(t, 'a')
  const dir = tmpDir(t)
  fs.writeFileSync(path.join(dir, 'Makefile'), 'all:\n\t@true\n')
  const r = await jobclient(['run', '--', MAKE44, '-j2', '-C', dir], fifoEnv(pool.path))
  t.equal(r.code, 0, r.stderr)
  t.match(r.stderr, /WARN_JOBSERVER_JOBS_FLAG/)
  t.match(r.stderr, /resetting jobserver mode/, "make's own words: the warning is true")
  const quiet = await jobclient(['run', '--', MAKE44, '-C', dir], fifoEnv(pool.path))
  t.notMatch(quiet.stderr, /WARN_JOBSERVER|resetting jobserver/, 'without -j: no warning, and make keeps the jobserver')
})

/** An inner Makefile of `n` recipes, one unit each, with a barrier of `barrier` (see make-worker.js). */
function innerMakefile(dir: string, n: number, barrier: number): string {
  fs.mkdirSync(path.join(dir, 'live'), { recursive: true })
  const names = Array.from({ length: n }, (_, i) => `u${i}`)
  const file = path.join(dir, 'inner.mk')
  let text = `all: ${names.join(' ')}\n.PHONY: all ${names.join(' ')}\n`
  for (const u of names) text += `${u}:\n\t+@${JSON.stringify(NODE)} ${WORKER} units ${u} 1 ${barrier} ${dir}\n`
  fs.writeFileSync(file, text)
  return file
}

for (const [label, makeBin] of [
  ['make 4.4.1 (fifo: auth)', MAKE44],
  ["Debian's make 4.3 (fds 3,4)", '/usr/bin/make'],
] as const) {
  t.test(`a ${label} inside \`jobclient run\` shares the pool, our token being its implicit slot`, async (t) => {
    // The pool has 3 tokens: jobclient takes one (the inner make's implicit slot) and the make
    // may take the other two, so exactly 3 recipes may run at once.
    const pool = makePool(t, 'abc')
    const dir = tmpDir(t)
    const mk = innerMakefile(dir, 7, 3)
    const r = await run(NODE, [JOBCLIENT_BIN, 'run', '--', makeBin, '-f', mk], { env: fifoEnv(pool.path), cwd: dir, timeoutMs: 120000 })
    t.equal(r.code, 0, r.stderr)
    t.notMatch(r.stderr, /invalid --jobserver-auth|jobserver unavailable|warning/, 'the make accepted the jobserver')
    const jobs = parseJobLog(fs.readFileSync(path.join(dir, 'jobs.log'), 'utf8'))
    t.equal(jobs.length, 7)
    const peak = maxOverlap(jobs)
    t.equal(peak, 3, `peak ${peak}: 3 slots used, never more`)
    t.equal(pool.count(), 3, 'every token back in the pool')
  })
}

for (const style of ['fifo', 'pipe'] as const) {
  t.test(`under make -j3 --jobserver-style=${style}, \`jobclient run make\` in a recipe joins make's pool`, async (t) => {
    // Outer make: 3 slots. Its recipe (implicit slot) runs jobclient, which takes one token for
    // the inner make; the inner make may take the last one: 2 inner recipes at once, at most.
    const dir = tmpDir(t)
    const mk = innerMakefile(dir, 5, 2)
    fs.writeFileSync(
      path.join(dir, 'Makefile'),
      `all:\n\t+@${JSON.stringify(NODE)} ${JOBCLIENT_BIN} run -- ${MAKE44} -f ${mk}\n`,
    )
    const r = await run(MAKE44, ['-j3', `--jobserver-style=${style}`, '-C', dir], {
      env: { ...process.env, MAKEFLAGS: '' },
      timeoutMs: 120000,
    })
    t.equal(r.code, 0, r.stderr)
    t.notMatch(r.stderr, /INTERNAL: Exiting with|warning/, 'no leak, no complaint')
    const jobs = parseJobLog(fs.readFileSync(path.join(dir, 'jobs.log'), 'utf8'))
    t.equal(jobs.length, 5)
    t.equal(maxOverlap(jobs), 2, 'two inner recipes at once: our token and the last free one')
  })
}

t.test('the default steved path works with nothing in the environment', async (t) => {
  // Same as a system with steved running: JOBCLIENT_DEFAULT_PATHS stands in for
  // /run/steved/jobserver, which this test must not touch.
  const pool = makePool(t, 'ab')
  const child = start(t, NODE, [JOBCLIENT_BIN, 'run', '-n', '2', '--', 'sh', '-c', 'echo started; read x'], {
    env: { ...BARE, JOBCLIENT_DEFAULT_PATHS: pool.path },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  await child.waitFor(/^started$/m)
  await waitUntil(() => pool.count() === 0, 'both tokens held')
  child.child.stdin!.end('\n')
  t.equal((await child.exited).code, 0)
  t.equal(pool.count(), 2)
})
