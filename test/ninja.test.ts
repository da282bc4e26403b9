// Released ninja 1.13.x (PyPI wheel) refuses steved's FUSE file ("Not a fifo path") and runs
// unthrottled; `jobclient fifo` gives it a private named pipe fed from the pool. Real meson,
// real ninja, real GNU make 4.4 and real compiles; the compiles record their own times.

import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'

import { CMAKE, JOBCLIENT, JOBCLIENT_NINJA, MESON, NINJA, VENV_BIN, writeCcWrapper, writeCmakeProject, writeMakeProject, writeMesonProject } from './helpers/cbuild'
import { maxOverlap, parseJobLog } from './helpers/joblog'
import { run, start } from './helpers/proc'
import { MAKE44, ROOT, startSteved, tmpDir, waitForStatus, type RunningSteved } from './helpers/steved'

const STEVECTL = path.join(ROOT, 'packages', 'steved', 'bin', 'stevectl.js')

interface Status {
  pool: { jobs: number; free: number; held: number; reserved: number }
  holders: Array<{ pid: number; tokens: number }>
  counters: { granted: number; returned: number; reclaimed: number }
}

async function status(s: RunningSteved): Promise<Status> {
  const r = await run(process.execPath, [STEVECTL, '--device', s.path, 'status', '--json'])
  if (r.code !== 0) throw new Error(`stevectl status failed: ${r.stderr}`)
  return JSON.parse(r.stdout) as Status
}

/** Every token back: no holder, no reservation, the whole pool free (status JSON). */
async function allBack(t: Test, s: RunningSteved, jobs: number): Promise<Status> {
  await waitForStatus(s, (r) => r.pool.free === jobs, 'every token back')
  const st = await status(s)
  t.equal(st.pool.free, jobs, `status: ${st.pool.free}/${jobs} free`)
  t.equal(st.pool.held, 0, 'status: nothing held')
  t.same(st.holders, [], 'status: no holders')
  return st
}

/** meson setup of a fresh project with `n` files; returns the build directory. */
async function mesonSetup(dir: string, n: number, cc: string, env: NodeJS.ProcessEnv): Promise<string> {
  const src = writeMesonProject(path.join(dir, 'src'), n)
  const build = path.join(dir, 'build')
  const r = await run(MESON, ['setup', build, src], { env: { ...env, CC: cc }, timeoutMs: 120000 })
  if (r.code !== 0) throw new Error(`meson setup failed: ${r.stdout}\n${r.stderr}`)
  return build
}

function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${VENV_BIN}:${process.env.PATH}` }
  delete env.MAKEFLAGS
  delete env.CARGO_MAKEFLAGS
  delete env.MFLAGS
  delete env.CCLOG
  return env
}

function childrenOf(pid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((x) => x !== '')
      .map(Number)
  } catch {
    return []
  }
}

/** Gone or a zombie: it runs no more jobs. */
function dead(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return true
  }
}

async function until(what: string, pred: () => boolean, ms = 30000): Promise<void> {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

t.test('the ninja under test is a released 1.13.x, and meson runs', async (t) => {
  const r = await run(NINJA, ['--version'])
  t.match(r.stdout, /^1\.13\./, `ninja ${r.stdout.trim()}`)
  t.match((await run(MESON, ['--version'])).stdout, /^\d+\.\d+/, 'meson runs')
})

t.test('meson + released ninja via jobclient-ninja and two make 4.4 builds share one pool', async (t) => {
  const JOBS = 3
  const dir = tmpDir(t, 'steved-ninja-')
  const s = await startSteved(t, { jobs: JOBS, dir })
  const log = path.join(dir, 'compiles.log')
  const cc = writeCcWrapper(dir)
  const env = baseEnv()
  const build = await mesonSetup(path.join(dir, 'm'), 40, cc, env)
  const mk1 = writeMakeProject(path.join(dir, 'make1'), 12, cc)
  const mk2 = writeMakeProject(path.join(dir, 'make2'), 12, cc)
  const pooled = { ...env, MAKEFLAGS: s.makeflags, CCLOG: log }

  const [ninja, m1, m2] = await Promise.all([
    run(MESON, ['compile', '-C', build], { env: { ...pooled, NINJA: JOBCLIENT_NINJA }, timeoutMs: 300000 }),
    run(MAKE44, ['-C', mk1], { env: pooled, timeoutMs: 300000 }),
    run(MAKE44, ['-C', mk2], { env: pooled, timeoutMs: 300000 }),
  ])
  t.equal(ninja.code, 0, `meson compile exited 0: ${ninja.stderr}`)
  t.equal(m1.code, 0, `make 1 exited 0: ${m1.stderr}`)
  t.equal(m2.code, 0, `make 2 exited 0: ${m2.stderr}`)
  const out = ninja.stdout + ninja.stderr
  t.notMatch(out, /Not a fifo path|Could not initialize jobserver/, 'ninja accepted the pipe')
  t.match(out, /Jobserver mode detected: .*--jobserver-auth=fifo:\S*jobclient-fifo-/, 'ninja used the private pipe')
  t.ok(fs.existsSync(path.join(build, 'many')), 'the program was built')

  const jobs = parseJobLog(fs.readFileSync(log, 'utf8'))
  t.equal(jobs.length, 42 + 14 + 14, 'every compile (n files + main.c) and link ran once')
  const peak = maxOverlap(jobs)
  t.ok(peak <= JOBS + 3, `peak ${peak} compiles at once <= ${JOBS} tokens + 3 implicit slots (ninja, 2 makes)`)
  t.ok(peak > 3, `peak ${peak} > 3: the builds took tokens from the pool`)
  const st = await allBack(t, s, JOBS)
  t.equal(st.counters.reclaimed, 0, 'everything was returned, nothing reclaimed')
  t.ok(st.counters.granted > 0, `${st.counters.granted} tokens granted`)
})

t.test('without the bridge the same ninja escapes the pool; through it, it stays inside', async (t) => {
  const JOBS = 1
  const dir = tmpDir(t, 'steved-ninja-')
  const s = await startSteved(t, { jobs: JOBS, dir })
  const cc = writeCcWrapper(dir)
  const env = baseEnv()
  const build = await mesonSetup(path.join(dir, 'm'), 24, cc, env)

  const bare = path.join(dir, 'bare.log')
  const r1 = await run(NINJA, ['-C', build], { env: { ...env, MAKEFLAGS: s.makeflags, CCLOG: bare }, timeoutMs: 300000 })
  t.equal(r1.code, 0, 'plain ninja built it')
  t.match(r1.stdout + r1.stderr, /Not a fifo path/, 'plain ninja refused the FUSE file')
  const barePeak = maxOverlap(parseJobLog(fs.readFileSync(bare, 'utf8')))
  t.ok(barePeak > JOBS + 1, `plain ninja ran ${barePeak} compiles at once, over ${JOBS} token + 1 implicit slot: the hole is real`)

  await run(NINJA, ['-C', build, '-t', 'clean'], { env })
  const bridged = path.join(dir, 'bridged.log')
  const r2 = await run(process.execPath, [JOBCLIENT, 'fifo', '--', NINJA, '-C', build], {
    env: { ...env, MAKEFLAGS: s.makeflags, CCLOG: bridged },
    timeoutMs: 300000,
  })
  t.equal(r2.code, 0, `bridged ninja built it: ${r2.stderr}`)
  const jobs = parseJobLog(fs.readFileSync(bridged, 'utf8'))
  t.equal(jobs.length, 26, 'every compile (24 + main.c) and the link ran')
  const peak = maxOverlap(jobs)
  t.ok(peak <= JOBS + 1, `bridged ninja ran at most ${peak} <= ${JOBS} token + 1 implicit slot`)
  t.ok(peak >= 2, `bridged ninja ran ${peak} at once: it got the token through the pipe`)
  await allBack(t, s, JOBS)
})

t.test('CMake with CMAKE_MAKE_PROGRAM=jobclient-ninja builds on the pool', async (t) => {
  const JOBS = 2
  const dir = tmpDir(t, 'steved-ninja-')
  const s = await startSteved(t, { jobs: JOBS, dir })
  const cc = writeCcWrapper(dir)
  const env = baseEnv()
  const src = writeCmakeProject(path.join(dir, 'src'), 20)
  const build = path.join(dir, 'build')
  const pooled = { ...env, MAKEFLAGS: s.makeflags, JOBCLIENT_NINJA: NINJA }
  const conf = await run(CMAKE, ['-G', 'Ninja', `-DCMAKE_MAKE_PROGRAM=${JOBCLIENT_NINJA}`, `-DCMAKE_C_COMPILER=${cc}`, '-S', src, '-B', build], {
    env: pooled,
    timeoutMs: 120000,
  })
  t.equal(conf.code, 0, `cmake configured with jobclient-ninja: ${conf.stdout}${conf.stderr}`)
  const log = path.join(dir, 'compiles.log')
  const r = await run(CMAKE, ['--build', build], { env: { ...pooled, CCLOG: log }, timeoutMs: 300000 })
  t.equal(r.code, 0, `cmake --build: ${r.stdout}${r.stderr}`)
  t.notMatch(r.stdout + r.stderr, /Not a fifo path/, 'ninja accepted the pipe')
  const jobs = parseJobLog(fs.readFileSync(log, 'utf8'))
  t.equal(jobs.length, 22, 'every compile (20 + main.c) and the link ran')
  const peak = maxOverlap(jobs)
  t.ok(peak <= JOBS + 1, `peak ${peak} <= ${JOBS} tokens + 1 implicit slot`)
  t.ok(peak >= 2, `peak ${peak}: ninja took tokens through the pipe`)
  await allBack(t, s, JOBS)
})

t.test("steved's per-process limit caps a whole ninja build: steved sees it as the bridge", async (t) => {
  const dir = tmpDir(t, 'steved-ninja-')
  const s = await startSteved(t, { jobs: 4, dir, args: ['--per-process-limit', '1'] })
  const cc = writeCcWrapper(dir)
  const env = baseEnv()
  const build = await mesonSetup(path.join(dir, 'm'), 16, cc, env)
  const log = path.join(dir, 'compiles.log')
  const r = await run(process.execPath, [JOBCLIENT, 'fifo', '--', NINJA, '-C', build], {
    env: { ...env, MAKEFLAGS: s.makeflags, CCLOG: log },
    timeoutMs: 300000,
  })
  t.equal(r.code, 0, `bridged ninja built it: ${r.stderr}`)
  const peak = maxOverlap(parseJobLog(fs.readFileSync(log, 'utf8')))
  t.ok(peak <= 2, `peak ${peak} <= 1 token (the limit) + 1 implicit slot, on a pool of 4`)
  t.ok(peak >= 2, `peak ${peak}: it did get its one token`)
  await allBack(t, s, 4)
})

for (const victim of ['bridge', 'ninja'] as const) {
  t.test(`the ${victim} SIGKILLed mid-build: every token comes back`, async (t) => {
    const JOBS = 3
    const dir = tmpDir(t, 'steved-ninja-')
    const s = await startSteved(t, { jobs: JOBS, dir })
    const cc = writeCcWrapper(dir, 1000)
    const env = baseEnv()
    const build = await mesonSetup(path.join(dir, 'm'), 40, cc, env)
    const log = path.join(dir, 'compiles.log')
    const bridge = start(t, process.execPath, [JOBCLIENT, 'fifo', '-k', '2', '--', NINJA, '-C', build], {
      // The pipe's directory of a SIGKILLed bridge stays behind: keep it in the test's directory.
      env: { ...env, MAKEFLAGS: s.makeflags, CCLOG: log, TMPDIR: dir },
    })
    // Mid-build: the bridge holds tokens its ninja is using.
    await until('the bridge to hold tokens', () => fs.existsSync(log) && fs.readFileSync(log, 'utf8').split('\n').filter((l) => l.startsWith('start')).length >= 3)
    const st = await status(s)
    t.ok(st.holders.some((h) => h.pid === bridge.pid && h.tokens >= 1), `steved accounts tokens to the bridge (pid ${bridge.pid})`)
    const kids = childrenOf(bridge.pid)
    t.equal(kids.length, 1, 'the bridge has one child, ninja')
    const ninja = kids[0]
    t.match(fs.readFileSync(`/proc/${ninja}/cmdline`, 'utf8'), /ninja/, 'that child is ninja')

    if (victim === 'bridge') {
      process.kill(bridge.pid, 'SIGKILL')
      await until('ninja to die with its bridge', () => dead(ninja))
      t.pass('ninja died with the bridge (parent-death signal)')
      const after = await allBack(t, s, JOBS)
      t.ok(after.counters.reclaimed >= 1, `steved reclaimed ${after.counters.reclaimed} tokens from the dead bridge`)
    } else {
      process.kill(ninja, 'SIGKILL')
      const done = await bridge.exited
      t.equal(done.code, 137, 'the bridge exits as its child did (128+9)')
      const after = await allBack(t, s, JOBS)
      t.equal(after.counters.reclaimed, 0, 'the bridge returned every token itself')
    }
  })
}
