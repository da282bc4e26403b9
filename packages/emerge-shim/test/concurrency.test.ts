// One token per package job: with the shim, P tokens admit at most P package jobs at once,
// and their makes (real GNU make 4.4, no -j, MAKEFLAGS from steved) run at most P recipes at
// once in all: every job holds a token (holder) and its make's implicit slot runs on it, so
//     recipes running  <=  sum over compiling jobs of (1 + tokens its make read)
//                      <=  (jobs holding a token) + (tokens makes read)  <=  P.
// Without the shim each make's implicit slot is free: K jobs run up to P + K recipes.
// Concurrency is computed from the start/end times the recipes and jobs record.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { maxOverlap, parseJobLog } from '../../../test/helpers/joblog'
import { startSteved, tmpDir } from '../../../test/helpers/steved'
import {
  buildLog,
  holdersOf,
  makefile,
  probes,
  processTag,
  runEmerge,
  stevedStatus,
  waitForStatus,
  waitUntil,
  writeRecipe,
  type JobSpec,
} from './helpers/emerge'

const PHASES = ['setup', 'unpack', 'prepare', 'configure', 'compile', 'test', 'install']

function jobs(dir: string, k: number, recipes: number, barrier: number): JobSpec[] {
  const recipe = writeRecipe(dir)
  const barrierDir = path.join(dir, 'barrier')
  fs.mkdirSync(barrierDir, { recursive: true })
  return Array.from({ length: k }, (_, i) => ({
    category: 'app-misc',
    pf: `pkg${i}-1.0`,
    files: { Makefile: makefile({ prefix: `pkg${i}`, n: recipes, recipe, log: path.join(dir, 'jobs.log'), barrier, barrierDir, seconds: 0.2 }) },
  }))
}

t.test('without the shim, 4 jobs under 2 tokens run 4 recipes at once (the oversubscription it stops)', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 2, dir })
  const tag = processTag(t)
  // Every recipe waits until 4 have started: reachable only when all 4 makes run at once.
  const js = jobs(dir, 4, 2, 4)
  const emerge = runEmerge(t, { steved, dir, tag, jobs: js, env: { FEATURES: 'sandbox userpriv' } })
  const done = await emerge.exited
  t.equal(done.code, 0, `fake emerge finished: ${done.stderr}`)
  t.same(emerge.events().filter((e) => e.ev === 'end').map((e) => e.ok), [true, true, true, true], 'every job built')
  const recipes = parseJobLog(fs.readFileSync(path.join(dir, 'jobs.log'), 'utf8')).filter((j) => !j.name.startsWith('job-'))
  const peak = maxOverlap(recipes)
  t.ok(peak >= 4, `peak ${peak} recipes at once under a 2-token pool: one implicit slot per make`)
  for (const j of js) t.notMatch(buildLog(emerge.builddir(j)), /jobserver:/, `${j.pf}: the module stayed silent (no FEATURES=jobserver-token)`)
  const st = await stevedStatus(steved)
  t.equal(st.holders.length, 0, 'nothing holds a token afterwards')
})

t.test('with the shim, 2 tokens admit 2 package jobs and 2 recipes at once; each job holds 1 token from setup to its end', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 2, dir })
  const tag = processTag(t)
  // Every recipe waits until 2 have started: this proves the bound is reached, not just kept.
  const js = jobs(dir, 4, 4, 2)
  const emerge = runEmerge(t, { steved, dir, tag, jobs: js, env: { STEVED_TEST_PROBE: '1' } })
  const done = await emerge.exited
  t.equal(done.code, 0, `fake emerge finished: ${done.stderr}`)
  t.same(emerge.events().filter((e) => e.ev === 'end').map((e) => e.ok), [true, true, true, true], 'every job built')

  const log = parseJobLog(fs.readFileSync(path.join(dir, 'jobs.log'), 'utf8'))
  const recipes = log.filter((j) => !j.name.startsWith('job-'))
  const packageJobs = log.filter((j) => j.name.startsWith('job-'))
  t.equal(recipes.length, 16, 'every recipe ran once')
  t.equal(packageJobs.length, 4)
  t.equal(maxOverlap(recipes), 2, 'exactly 2 recipes at once at the peak: P tokens bound recipes + implicit slots at P')
  t.ok(maxOverlap(packageJobs) <= 2, `at most 2 package jobs at once (peak ${maxOverlap(packageJobs)})`)

  for (const j of js) {
    const pkg = `${j.category}/${j.pf}`
    const ps = probes(emerge.builddir(j))
    t.same(ps.map((p) => p.phase), PHASES, `${pkg}: a status probe in every build phase`)
    const holderPids = new Set<number>()
    for (const p of ps) {
      const hs = holdersOf(p.status, pkg)
      t.equal(hs.length, 1, `${pkg} ${p.phase}: one holder process`)
      t.equal(hs[0]?.tokens, 1, `${pkg} ${p.phase}: it holds exactly 1 token`)
      if (hs[0]) holderPids.add(hs[0].pid)
    }
    t.equal(holderPids.size, 1, `${pkg}: the same holder in every phase`)
    // The token held at install is as old as the whole build: it never went back in between.
    const first = ps[0]
    const last = ps[ps.length - 1]
    const age = holdersOf(last.status, pkg)[0]?.heldForSeconds[0] ?? 0
    const span = (last.atMs - first.atMs) / 1000
    t.ok(age >= span - 0.01, `${pkg}: at install the token is ${age} s old, the build since setup took ${span.toFixed(3)} s`)
    const out = buildLog(emerge.builddir(j))
    t.equal(out.match(/jobserver: \S+ holds 1 token until its build ends \(holder pid \d+; steved /g)?.length, 1, `${pkg}: says once which jobserver and token`)
    t.equal(out.match(/still holds 1 token/g)?.length, 6, `${pkg}: every later phase says it still holds it`)
    t.notMatch(out, /WARNING/, `${pkg}: no warnings`)
  }
  const st = await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 2, 'every token back')
  t.equal(st.counters.reclaimed, 0, 'every token was given back, none reclaimed from a dead process')
  t.equal(st.counters.granted, st.counters.returned, `granted ${st.counters.granted} = returned ${st.counters.returned}`)
})

t.test('the token is held through the post-install checks, and goes back after them', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 1, dir })
  const tag = processTag(t)
  const gate = path.join(dir, 'qa-done')
  const job = { category: 'app-misc', pf: 'qa-1.0', files: { Makefile: 'all:\n' } }
  const emerge = runEmerge(t, { steved, dir, tag, jobs: [job], env: { STEVED_TEST_QA_GATE: gate } })
  await waitUntil(() => fs.existsSync(path.join(emerge.builddir(job), 'temp', 'qa-running')), 'the post-install checks')
  const st = await stevedStatus(steved)
  t.equal(holdersOf(st, 'app-misc/qa-1.0')[0]?.tokens, 1, 'held while install_qa_check runs')
  t.match(buildLog(emerge.builddir(job)), /build done; app-misc\/qa-1\.0's token goes back after the install checks/)
  fs.writeFileSync(gate, '')
  t.equal((await emerge.exited).code, 0)
  await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 1, 'the token back')
})
