// A failed job gives its token back: through die() in the failing phase, and through Portage's
// die_hooks run after a phase that died without die() (killed by a signal). The token goes
// back only once the build's processes are gone, including one left running in the background.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
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
  waitForStatus,
  waitUntil,
  writeRecipe,
} from './helpers/emerge'

/** The live descendants of `pid` (children first found by their parent pid in /proc). */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>()
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const st = fs.readFileSync(`/proc/${name}/stat`, 'utf8')
      parent.set(Number(name), Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]))
    } catch {
      // gone
    }
  }
  const out: number[] = []
  const walk = (p: number) => {
    for (const [c, pp] of parent) {
      if (pp === p) {
        out.push(c)
        walk(c)
      }
    }
  }
  walk(pid)
  return out
}

t.test('a job whose compile phase dies gives its token back through the die hook; the job waiting for it then builds', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 1, dir })
  const tag = processTag(t)
  const recipe = writeRecipe(dir)
  const log = path.join(dir, 'jobs.log')
  const lateStart = path.join(dir, 'start-good')
  const badCompile = path.join(dir, 'compile-bad')
  const bad = { category: 'app-misc', pf: 'bad-1.0', files: { Makefile: makefile({ prefix: 'bad', n: 2, recipe, log, fail: true }) }, gates: { compile: badCompile } }
  const good = { category: 'app-misc', pf: 'good-1.0', files: { Makefile: makefile({ prefix: 'good', n: 2, recipe, log }) }, gates: { setup: lateStart } }
  const emerge = runEmerge(t, { steved, dir, tag, jobs: [bad, good] })
  // The second job starts once the first holds the only token, and the first compiles (and
  // fails) only once the second waits for that token.
  await waitForStatus(steved, (s) => holdersOf(s, 'app-misc/bad-1.0').length === 1, 'the failing job to hold the token')
  fs.writeFileSync(lateStart, '')
  await waitForStatus(steved, (s) => s.waiters.some((w) => w.cmdline.includes('--pkg app-misc/good-1.0 ')), 'the second job to wait')
  fs.writeFileSync(badCompile, '')
  const done = await emerge.exited
  t.equal(done.code, 0, `fake emerge finished: ${done.stderr}`)
  const ends = Object.fromEntries(emerge.events().filter((e) => e.ev === 'end').map((e) => [e.job, e.ok]))
  t.same(ends, { 'bad-1.0': false, 'good-1.0': true }, 'the failing job failed, the other one built')
  const badOut = buildLog(emerge.builddir(bad))
  t.match(badOut, /make failed/, 'die() was called in src_compile')
  t.match(badOut, /jobserver: app-misc\/bad-1\.0 failed; its token goes back once its \d+ remaining process\(es\) are gone/, 'the die hook said what happens to the token')
  t.match(holderLog(emerge.builddir(bad)), /end \(failed\)[^\n]*\n[^\n]*ending: the build failed/, 'the holder was told by the die hook')
  t.match(buildLog(emerge.builddir(good)), /good-1\.0 waits for a token: the only token is in use/, 'the second job waited for the token, and said why')
  const st = await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 1, 'the token back')
  t.equal(st.counters.reclaimed, 0, 'given back by the holder, not reclaimed from a dead process')
})

t.test('a phase killed by a signal (no die): die_hooks return the token, but only after what it left running is gone', async (t) => {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 1, dir })
  const tag = processTag(t)
  const gate = path.join(dir, 'never')
  const leftoverPid = path.join(dir, 'leftover.pid')
  // The recipe starts a background process (a test server, say) with its own stdio, then waits.
  const mk =
    'all:\n' +
    `\t@sleep 300 </dev/null >/dev/null 2>&1 & echo $$! > ${leftoverPid}; ` +
    `while [ ! -e ${gate} ]; do sleep 0.05; done\n`
  const job = { category: 'app-misc', pf: 'killed-1.0', files: { Makefile: mk } }
  const emerge = runEmerge(t, { steved, dir, tag, jobs: [job] })
  await waitUntil(() => fs.existsSync(leftoverPid) && fs.readFileSync(leftoverPid, 'utf8').trim() !== '', 'the background process')
  const leftover = Number(fs.readFileSync(leftoverPid, 'utf8'))
  const compile = emerge.events().find((e) => e.ev === 'phase' && e.phase === 'compile')!.pid as number
  // Kill the phase (ebuild.sh, the phase subshell, make, the recipe), not the background process.
  const spare = new Set([leftover, ...descendants(leftover)])
  for (const p of [compile, ...descendants(compile)].filter((p) => !spare.has(p))) process.kill(p, 'SIGKILL')
  await waitUntil(() => emerge.events().some((e) => e.ev === 'phase-end' && e.phase === 'die_hooks'), 'Portage to run the die hooks')
  await waitUntil(() => /ending: the build failed/.test(holderLog(emerge.builddir(job))), 'the holder to take its snapshot')
  t.ok(alive(leftover), 'the background process still runs')
  const st = await stevedStatus(steved)
  t.equal(holdersOf(st, 'app-misc/killed-1.0')[0]?.tokens, 1, 'the job still holds its token while its background process runs')
  t.match(holderLog(emerge.builddir(job)), new RegExp(`ending: the build failed; waiting for \\d+ process\\(es\\) of the build: [\\d ]*\\b${leftover}\\b`), 'its snapshot of the build has the background process')
  process.kill(leftover, 'SIGKILL')
  const after = await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 1, 'the token back')
  t.equal(after.counters.reclaimed, 0, 'given back by the holder')
  const done = await emerge.exited
  t.equal(done.code, 0)
  t.same(emerge.events().filter((e) => e.ev === 'end').map((e) => e.ok), [false], 'the job failed')
})
