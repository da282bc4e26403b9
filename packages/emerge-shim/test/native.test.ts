// Portage >= 3.0.74 takes a token per job itself with FEATURES=jobserver-token; the shim must
// then take no second one, and say so once per job. Here fake-emerge does what Portage's
// Scheduler does (a token per job, read before the job starts, written back after the
// post-install checks), and the module must leave the jobserver alone.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { maxOverlap, parseJobLog } from '../../../test/helpers/joblog'
import { startSteved, tmpDir } from '../../../test/helpers/steved'
import { buildLog, holderLog, makefile, probes, processTag, runEmerge, waitForStatus, writeRecipe } from './helpers/emerge'

const NATIVE_NOTE = /jobserver: Portage 3\.0\.82 implements FEATURES=jobserver-token itself \(found from ([^)]*)\): emerge holds this job's token, the shim takes no second one/g

t.test('PORTAGE_VERSION=3.0.82: emerge holds each job token, the shim takes none and says so once per job', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 2, dir })
  const tag = processTag(t)
  const recipe = writeRecipe(dir)
  const log = path.join(dir, 'recipes.log')
  const jobs = [0, 1, 2].map((i) => ({ category: 'app-misc', pf: `n${i}-1.0`, files: { Makefile: makefile({ prefix: `n${i}`, n: 3, recipe, log, seconds: 0.1 }) } }))
  const emerge = runEmerge(t, { steved, dir, tag, jobs, nativeToken: true, env: { PORTAGE_VERSION: '3.0.82', STEVED_TEST_PROBE: '1' } })
  const done = await emerge.exited
  t.equal(done.code, 0, `fake emerge finished: ${done.stderr}`)
  t.same(emerge.events().filter((e) => e.ev === 'end').map((e) => e.ok), [true, true, true], 'every job built')
  for (const j of jobs) {
    const b = emerge.builddir(j)
    const ps = probes(b)
    t.equal(ps.length, 7, `${j.pf}: a probe in every build phase`)
    for (const p of ps) {
      const holders = p.status.holders
      t.notOk(holders.some((h) => h.cmdline.includes(' holder ')), `${j.pf} ${p.phase}: no shim holder holds a token`)
      t.ok(holders.some((h) => h.pid === emerge.started.pid && h.tokens >= 1), `${j.pf} ${p.phase}: emerge holds the job tokens`)
    }
    const notes = [...buildLog(b).matchAll(NATIVE_NOTE)]
    t.equal(notes.length, 1, `${j.pf}: said once`)
    t.equal(notes[0]?.[1], 'PORTAGE_VERSION')
    t.notMatch(buildLog(b), /holds 1 token until|WARNING/, `${j.pf}: no token of its own, no warning`)
    t.equal(holderLog(b), '', `${j.pf}: no holder was started`)
  }
  t.ok(maxOverlap(parseJobLog(fs.readFileSync(log, 'utf8'))) <= 2, 'at most 2 recipes at once: the tokens emerge holds pay for the implicit slots')
  await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 2, 'every token back')
})

t.test('installed Portage 3.0.82 found from PORTAGE_PYM_PATH (Portage exports no version variable)', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 2, dir })
  const tag = processTag(t)
  const pym = path.join(dir, 'pym')
  fs.mkdirSync(path.join(pym, 'portage'), { recursive: true })
  fs.writeFileSync(path.join(pym, 'portage', '__init__.py'), '# portage\nVERSION = "3.0.82"\n')
  const job = { category: 'app-misc', pf: 'pym-1.0', files: { Makefile: 'all:\n' } }
  const emerge = runEmerge(t, { steved, dir, tag, jobs: [job], nativeToken: true, env: { PORTAGE_PYM_PATH: pym } })
  t.equal((await emerge.exited).code, 0)
  const notes = [...buildLog(emerge.builddir(job)).matchAll(NATIVE_NOTE)]
  t.equal(notes.length, 1, 'said once')
  t.equal(notes[0]?.[1], `${pym}/portage/__init__.py`)
  t.equal(holderLog(emerge.builddir(job)), '', 'no holder was started')
})

t.test('PORTAGE_VERSION=3.0.73 (before the feature): the shim takes the token', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 2, dir })
  const tag = processTag(t)
  const job = { category: 'app-misc', pf: 'old-1.0', files: { Makefile: 'all:\n' } }
  const emerge = runEmerge(t, { steved, dir, tag, jobs: [job], env: { PORTAGE_VERSION: '3.0.73' } })
  t.equal((await emerge.exited).code, 0)
  t.match(buildLog(emerge.builddir(job)), /old-1\.0 holds 1 token until its build ends/)
  t.notMatch(buildLog(emerge.builddir(job)), /implements FEATURES=jobserver-token itself/)
  await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 2, 'the token back')
})
