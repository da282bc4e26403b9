// emerge going away: a SIGKILLed emerge leaves its build running (DESIGN.md), so the job's
// token must stay held until that build is gone, and come back then; between phases it comes
// back at once. And a holder killed between phases (FEATURES=cgroup kills what a phase leaves
// running) loses nothing: steved reclaims its token and the next phase takes a new one.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { parseJobLog } from '../../../test/helpers/joblog'
import { startSteved, tmpDir } from '../../../test/helpers/steved'
import {
  alive,
  buildLog,
  holderLog,
  holdersOf,
  makefile,
  processTag,
  runEmerge,
  stevedStatus,
  tagged,
  MAKE44,
  waitForStatus,
  waitUntil,
  writeRecipe,
} from './helpers/emerge'

const PKG = 'app-misc/victim-1.0'

t.test('emerge SIGKILLed during compile: the token stays while the build runs on, and comes back when it is gone', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 2, dir })
  const tag = processTag(t)
  const recipe = writeRecipe(dir)
  // Not jobs.log, where pkg_setup writes the job's own start line.
  const log = path.join(dir, 'recipes.log')
  const go = path.join(dir, 'go')
  const job = { category: 'app-misc', pf: 'victim-1.0', files: { Makefile: makefile({ prefix: 'v', n: 3, recipe, log, gate: go, seconds: 0.1 }) } }
  const emerge = runEmerge(t, { steved, dir, tag, jobs: [job] })
  await waitUntil(() => fs.existsSync(log) && /^start /m.test(fs.readFileSync(log, 'utf8')), 'a recipe to start')
  const make = tagged(tag).find((p) => p.argv[0] === MAKE44)?.pid ?? 0
  emerge.started.child.kill('SIGKILL')
  await emerge.exited
  const b = emerge.builddir(job)
  await waitUntil(() => /ending: pid \d+ \(node\), which ran the phases, is gone; waiting for \d+ process/.test(holderLog(b)), 'the holder to notice')
  t.ok(make > 0 && alive(make), `make (pid ${make}) runs on without emerge`)
  const st = await stevedStatus(steved)
  t.equal(holdersOf(st, PKG)[0]?.tokens, 1, 'the job still holds its token while its build runs')
  t.notMatch(holderLog(b), /gave \d+ token/, 'nothing was given back yet')

  fs.writeFileSync(go, '')
  const after = await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 2, 'every token back')
  t.equal(after.counters.reclaimed, 0, 'the holder gave its token back itself')
  t.notOk(alive(make), 'make is gone')
  // The token went back after the last recipe ended (both clocks are the wall clock).
  const lastEnd = Math.max(...parseJobLog(fs.readFileSync(log, 'utf8')).map((j) => j.end))
  const gave = /^(\S+) holder \d+ \S+: gave 1 token\(s\) back/m.exec(holderLog(b))
  t.ok(gave, 'the holder logged the release')
  t.ok(gave && Date.parse(gave[1]) >= Math.floor(lastEnd), `released at ${gave?.[1]}, after the last recipe ended at ${new Date(lastEnd).toISOString()}`)
})

t.test('emerge SIGKILLed between two phases: the token comes back at once (nothing of the build runs)', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 2, dir })
  const tag = processTag(t)
  const job = { category: 'app-misc', pf: 'victim-1.0', files: { Makefile: 'all:\n' }, gates: { compile: path.join(dir, 'never') } }
  const emerge = runEmerge(t, { steved, dir, tag, jobs: [job] })
  await waitUntil(() => emerge.events().some((e) => e.ev === 'phase-end' && e.phase === 'configure'), 'configure to end')
  t.equal(holdersOf(await stevedStatus(steved), PKG)[0]?.tokens, 1, 'between phases the job holds its token')
  emerge.started.child.kill('SIGKILL')
  await emerge.exited
  await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 2, 'the token back')
  t.match(holderLog(emerge.builddir(job)), /which ran the phases, is gone; waiting for 0 process\(es\)/, 'no build process was left to wait for')
})

t.test('a holder killed between phases: steved reclaims its token, and the next phase warns and takes a new one', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 1, dir })
  const tag = processTag(t)
  const go = path.join(dir, 'go')
  const job = { category: 'app-misc', pf: 'victim-1.0', files: { Makefile: 'all:\n\t@true\n' }, gates: { compile: go } }
  const emerge = runEmerge(t, { steved, dir, tag, jobs: [job] })
  await waitUntil(() => emerge.events().some((e) => e.ev === 'phase-end' && e.phase === 'configure'), 'configure to end')
  const holder = holdersOf(await stevedStatus(steved), PKG)[0]
  t.ok(holder, 'a holder holds the token')
  process.kill(holder.pid, 'SIGKILL')
  const reclaimed = await waitForStatus(steved, (s) => s.pool.free === 1, 'steved to reclaim the token')
  t.equal(reclaimed.counters.reclaimed, 1, 'reclaimed from the dead holder')
  fs.writeFileSync(go, '')
  const done = await emerge.exited
  t.equal(done.code, 0)
  t.same(emerge.events().filter((e) => e.ev === 'end').map((e) => e.ok), [true], 'the job built')
  t.match(buildLog(emerge.builddir(job)), /WARNING: jobserver: the holder of app-misc\/victim-1\.0's token from earlier phases is gone/, 'the compile phase said so')
  const again = /victim-1\.0 holds 1 token until its build ends \(holder pid (\d+)/g
  const pids = [...buildLog(emerge.builddir(job)).matchAll(again)].map((m) => Number(m[1]))
  t.same(pids.length, 2, 'the token was taken twice: at setup and again at compile')
  t.not(pids[1], holder.pid, 'by a new holder')
  const end = await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 1, 'the new token back')
  t.equal(end.counters.reclaimed, 1, 'the new holder gave its token back itself')
})
