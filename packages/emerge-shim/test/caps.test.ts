// Per-package settings (package.env), with real emerge (3.0.73 and 3.0.83, the README's
// set-up) against steved: JOBSERVER_MAX_JOBS=N caps the jobs of one build through a steved
// process group (the phases' ebuild.sh processes and the job's holder are its roots), while
// other builds use the rest of the pool; JOBSERVER_TOKENS=N makes the job hold N tokens.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { maxOverlap, parseJobLog } from '../../../test/helpers/joblog'
import { startSteved, tmpDir } from '../../../test/helpers/steved'
import { holdersOf, makefile, processTag, waitForStatus, writeRecipe } from './helpers/emerge'
import { capBinds, cappedAndFree, finishCapped } from './helpers/capped'
import { finished, makeBed, PORTAGE_VERSIONS } from './helpers/portage'

// Each real emerge takes 10-40 s on a shared 2-core machine; tap's default file limit is 300 s.
t.setTimeout(900_000)

for (const version of PORTAGE_VERSIONS) {
  t.test(`Portage ${version}: JOBSERVER_MAX_JOBS=2: the capped build never runs more than 2 jobs, the uncapped one uses the rest of the pool`, async (t) => {
    const dir = tmpDir(t)
    const steved = await startSteved(t, { jobs: 8, dir })
    const tag = processTag(t)
    const recipe = writeRecipe(dir)
    const log = path.join(dir, 'recipes.log')
    const { packages, barrier: bA, gate: go } = cappedAndFree(dir, recipe, log)
    const bed = makeBed({ version, jobserver: steved, dir, tag, packages })
    const emerge = bed.emerge(t, ['--jobs=2', 'app-misc/capped', 'app-misc/free'])
    const seen = await waitForStatus(steved, (s) => capBinds('app-misc/capped-1')(s) && fs.readdirSync(bA).length === 2, "the cap to hold the capped build's make back", 120_000)
    const group = seen.groups.find((g) => g.name === 'app-misc/capped-1')!
    t.equal(group.limit, 2, "group limit 2: the holder's token (it pays for make's implicit slot) and one token make may read")
    t.ok(group.tokens <= 2, `the group holds ${group.tokens} token(s)`)
    await finishCapped(t, bed, emerge, go, log)
    t.notMatch(bed.buildLog('free'), /JOBSERVER_MAX_JOBS/)
    await waitForStatus(steved, (s) => s.holders.length === 0 && s.groups.length === 0 && s.pool.free === 8, 'every token back, the group gone')
  })
}

t.test('Portage 3.0.73: JOBSERVER_MAX_JOBS=1: one job at a time although the pool has more', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 4, dir })
  const tag = processTag(t)
  const recipe = writeRecipe(dir)
  const log = path.join(dir, 'recipes.log')
  const go = path.join(dir, 'go')
  const job = { name: 'heavy', env: { JOBSERVER_MAX_JOBS: '1' }, makefile: makefile({ prefix: 'heavy', n: 4, recipe, log, gate: go, seconds: 0.05 }) }
  const bed = makeBed({ version: '3.0.73', jobserver: steved, dir, tag, packages: [job] })
  const emerge = bed.emerge(t, ['app-misc/heavy'])
  const seen = await waitForStatus(steved, capBinds('app-misc/heavy-1'), 'make to be held back by the cap', 120_000)
  t.ok(seen.pool.free >= 2, `held back with ${seen.pool.free} tokens free`)
  t.equal(seen.groups[0]?.limit, 1, "limit 1: the job's own token, on which make runs its one job")
  fs.writeFileSync(go, '')
  const done = await finished(emerge)
  t.equal(done.code, 0, 'emerge finished', { output: done.stdout.slice(-3000) })
  t.equal(maxOverlap(parseJobLog(fs.readFileSync(log, 'utf8'))), 1, 'one recipe at a time')
})

t.test('Portage 3.0.73: JOBSERVER_TOKENS=2: the job holds 2 tokens from setup to its end', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 3, dir })
  const tag = processTag(t)
  const job = { name: 'wide', env: { JOBSERVER_TOKENS: '2' }, makefile: 'all:\n\t@true\n' }
  const bed = makeBed({ version: '3.0.73', jobserver: steved, dir, tag, packages: [job], probe: true })
  const done = await finished(bed.emerge(t, ['app-misc/wide']))
  t.equal(done.code, 0, 'emerge finished', { output: done.stdout.slice(-3000) })
  const ps = bed.probes('wide')
  t.equal(ps.length, 6, 'a probe in every build phase (no test phase without FEATURES=test)')
  for (const p of ps) t.equal(holdersOf(p.status, 'app-misc/wide-1')[0]?.tokens, 2, `${p.phase}: the holder holds 2 tokens`)
  t.match(bed.buildLog('wide'), /wide-1 holds 2 tokens until its build ends/)
  await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 3, 'every token back')
})
