// One token per package job, with real emerge (Portage 3.0.73 and 3.0.83 from PyPI) against a
// real steved: with the shim, P tokens admit at most P package jobs at once, and their makes
// (emake, no -j: the seeds' make.conf) run at most P recipes at once in all: every job holds a
// token and its make's implicit slot runs on it, so
//     recipes running  <=  sum over compiling jobs of (1 + tokens its make read)
//                      <=  (jobs holding a token) + (tokens makes read)  <=  P.
// Without the shim each make's implicit slot is free: K jobs run up to P + K recipes.
// Concurrency is computed from the start/end times the recipes and jobs record.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { maxOverlap, parseJobLog } from '../../../test/helpers/joblog'
import { startSteved, tmpDir } from '../../../test/helpers/steved'
import { holdersOf, makefile, processTag, stevedStatus, waitForStatus, writeRecipe } from './helpers/emerge'
import { ewarns, finished, makeBed, type PackageSpec, PORTAGE_VERSIONS } from './helpers/portage'

// Each real emerge takes 10-40 s on a shared 2-core machine; tap's default file limit is 300 s.
t.setTimeout(900_000)

// Portage runs no test phase without FEATURES=test.
const PHASES = ['setup', 'unpack', 'prepare', 'configure', 'compile', 'install']

function packages(dir: string, k: number, recipes: number, barrier: number): PackageSpec[] {
  const recipe = writeRecipe(dir)
  const barrierDir = path.join(dir, 'barrier')
  fs.mkdirSync(barrierDir, { recursive: true })
  return Array.from({ length: k }, (_, i) => ({
    name: `pkg${i}`,
    makefile: makefile({ prefix: `pkg${i}`, n: recipes, recipe, log: path.join(dir, 'jobs.log'), barrier, barrierDir, seconds: 0.3 }),
  }))
}

t.test('Portage 3.0.73 without the shim: 4 jobs under 2 tokens run 4 recipes at once (the oversubscription it stops)', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 2, dir })
  const tag = processTag(t)
  // Every recipe waits until 4 have started: reachable only when all 4 makes run at once.
  const pkgs = packages(dir, 4, 2, 4)
  const bed = makeBed({ version: '3.0.73', jobserver: steved, dir, tag, packages: pkgs, shim: false })
  const done = await finished(bed.emerge(t, ['--jobs=4', ...pkgs.map((p) => `app-misc/${p.name}`)]))
  t.equal(done.code, 0, 'emerge finished', { output: done.stdout.slice(-3000) })
  for (const p of pkgs) t.ok(bed.installed(p.name), `${p.name} merged`)
  const recipes = parseJobLog(fs.readFileSync(bed.jobsLog, 'utf8')).filter((j) => !j.name.startsWith('job-'))
  const peak = maxOverlap(recipes)
  t.ok(peak >= 4, `peak ${peak} recipes at once under a 2-token pool: one implicit slot per make`)
  const st = await stevedStatus(steved)
  t.equal(st.holders.length, 0, 'nothing holds a token afterwards')
})

const variants = [
  ...PORTAGE_VERSIONS.map((version) => ({ version, featuresToken: false, what: 'the README as written (the shim holds the job tokens)' })),
  { version: '3.0.83' as const, featuresToken: true, what: 'FEATURES=jobserver-token (emerge holds the job tokens)' },
]

for (const v of variants) {
  t.test(`Portage ${v.version}, ${v.what}: emerge --jobs=8 of 5 packages on 2 tokens finishes, 2 package jobs and 2 recipes at once`, async (t) => {
    const dir = tmpDir(t)
    const steved = await startSteved(t, { jobs: 2, dir })
    const tag = processTag(t)
    // Every recipe waits until 2 have started: the bound is reached, not just kept.
    const pkgs = packages(dir, 5, 3, 2)
    const bed = makeBed({ version: v.version, jobserver: steved, dir, tag, packages: pkgs, featuresToken: v.featuresToken, probe: true })
    const emerge = bed.emerge(t, ['--jobs=8', ...pkgs.map((p) => `app-misc/${p.name}`)])
    const done = await finished(emerge)
    t.equal(done.code, 0, 'emerge finished', { output: done.stdout.slice(-3000) })
    for (const p of pkgs) t.ok(bed.installed(p.name), `${p.name} merged`)

    const log = parseJobLog(fs.readFileSync(bed.jobsLog, 'utf8'))
    const recipes = log.filter((j) => !j.name.startsWith('job-'))
    const jobs = log.filter((j) => j.name.startsWith('job-'))
    t.equal(recipes.length, 15, 'every recipe ran once')
    t.equal(jobs.length, 5)
    t.equal(maxOverlap(recipes), 2, 'exactly 2 recipes at once at the peak: P tokens bound recipes + implicit slots at P')
    t.ok(maxOverlap(jobs) <= 2, `at most 2 package builds at once (peak ${maxOverlap(jobs)})`)

    for (const p of pkgs) {
      const pkg = `app-misc/${p.name}-1`
      const ps = bed.probes(p.name)
      t.same(ps.map((x) => x.phase), PHASES, `${pkg}: a status probe in every build phase`)
      const out = bed.buildLog(p.name)
      // The seeds' MAKEOPTS="-j32 -l32": ebuilds still read 32 from it, while emake runs make
      // without it (emake prints its command), so make stays in the pool (the peak above).
      t.equal(bed.makeopts(p.name), '-j32 -l32', `${pkg}: src_compile sees MAKEOPTS="-j32 -l32"`)
      t.match(out, /^make $/m, `${pkg}: emake ran plain "make" (MAKEOPTS ignored because MAKEFLAGS is set)`)
      if (v.featuresToken) {
        for (const x of ps) {
          t.same(holdersOf(x.status, pkg), [], `${pkg} ${x.phase}: no shim holder`)
          t.ok(x.status.holders.some((h) => h.pid === emerge.pid && h.tokens >= 1), `${pkg} ${x.phase}: emerge holds the job tokens`)
        }
        t.equal(out.match(/jobserver: Portage 3\.0\.83 implements FEATURES=jobserver-token itself/g)?.length, 1, `${pkg}: the shim says once that emerge holds the token`)
        t.equal(bed.holderLog(p.name), '', `${pkg}: no holder was started`)
        continue
      }
      const holderPids = new Set<number>()
      for (const x of ps) {
        const hs = holdersOf(x.status, pkg)
        t.equal(hs.length, 1, `${pkg} ${x.phase}: one holder process`)
        t.equal(hs[0]?.tokens, 1, `${pkg} ${x.phase}: it holds exactly 1 token`)
        if (hs[0]) holderPids.add(hs[0].pid)
      }
      t.equal(holderPids.size, 1, `${pkg}: the same holder in every phase`)
      t.equal(out.match(/jobserver: \S+ holds 1 token until its build ends \(holder pid \d+; steved /g)?.length, 1, `${pkg}: says once which jobserver and token`)
      t.match(out, /jobserver: build done; app-misc\/pkg\d-1's token goes back after the install checks/, `${pkg}: the post-install checks ended the job`)
      t.match(bed.holderLog(p.name), /end \(success\) from pid \d+/, `${pkg}: the holder was told by the post-install checks, not by emerge's exit`)
      t.same(ewarns(out), [], `${pkg}: no warnings (ewarn)`)
    }
    const st = await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 2, 'every token back')
    t.equal(st.counters.reclaimed, 0, 'every token was given back, none reclaimed from a dead process')
    t.equal(st.counters.granted, st.counters.returned, `granted ${st.counters.granted} = returned ${st.counters.returned}`)
  })
}

// FEATURES=pid-sandbox (on by default where the kernel allows it) ends every phase by killing
// its pid namespace, the holder included: the job holds its token during each phase and takes
// it again in the next, so between phases another job may start. make jobs stay within the
// pool all the same: each make's implicit slot runs while its job holds a token.
t.test('Portage 3.0.73 with FEATURES=pid-sandbox: the token is taken afresh in every phase; make jobs stay within the pool', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 2, dir })
  const tag = processTag(t)
  const pkgs = packages(dir, 3, 3, 2)
  const bed = makeBed({ version: '3.0.73', jobserver: steved, dir, tag, packages: pkgs, makeConf: ['FEATURES="${FEATURES} pid-sandbox"'] })
  const done = await finished(bed.emerge(t, ['--jobs=8', ...pkgs.map((p) => `app-misc/${p.name}`)]))
  t.equal(done.code, 0, 'emerge finished', { output: done.stdout.slice(-3000) })
  for (const p of pkgs) t.ok(bed.installed(p.name), `${p.name} merged`)
  const recipes = parseJobLog(fs.readFileSync(bed.jobsLog, 'utf8')).filter((j) => !j.name.startsWith('job-'))
  t.equal(maxOverlap(recipes), 2, 'at most (and at the peak) 2 recipes at once on 2 tokens')
  for (const p of pkgs) {
    const out = bed.buildLog(p.name)
    t.match(out, /jobserver: FEATURES=pid-sandbox ended the holder of app-misc\/pkg\d-1's token with the last phase; taking the token again/, `${p.name}: said why it takes the token again`)
    t.same(ewarns(out), [], `${p.name}: no warnings (ewarn)`)
  }
  const st = await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 2, 'every token back')
  t.ok(st.counters.reclaimed > 0, `steved reclaimed the tokens of the holders pid-sandbox killed (${st.counters.reclaimed})`)
})
