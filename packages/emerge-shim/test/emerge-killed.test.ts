// emerge going away, with real emerge (3.0.73 and 3.0.83, the README's set-up) against steved:
// SIGTERM and SIGKILL of emerge while its builds compile. Whatever emerge leaves running (a
// SIGKILLed emerge leaves its whole build) keeps the job's token; every token comes back once
// the last build process is gone, and no build process outlives its token.
import * as fs from 'node:fs'
import t from 'tap'
import { parseJobLog } from '../../../test/helpers/joblog'
import { alive, holdersOf, sleep, stevedStatus, tagged, waitForStatus, waitUntil } from './helpers/emerge'
import { startGatedBuilds } from './helpers/gated'
import { finished, PORTAGE_VERSIONS } from './helpers/portage'

// Each real emerge takes 10-40 s on a shared 2-core machine; tap's default file limit is 300 s.
t.setTimeout(900_000)

/** The end times (ms) of the recipes that ended, by name; a killed recipe never writes its end. */
function recipeEnds(log: string): Array<{ name: string; end: number }> {
  const ended = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter((l) => l.startsWith('end ')) : []
  return parseJobLog(ended.map((l) => `${l.replace(/^end /, 'start ')}\n${l}`).join('\n')).map((j) => ({ name: j.name, end: j.end }))
}

for (const version of PORTAGE_VERSIONS) {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    t.test(`Portage ${version}: emerge ${signal}ed while 2 builds compile: every token comes back, none before the build process that used it is gone`, async (t) => {
      // 3 tokens: 2 held by the jobs, 1 free for one make. Both builds compile before emerge is
      // killed (3 recipes started: two implicit slots and the free token); the recipes then
      // wait for the gate.
      const { steved, tag, log, go, pkgs, bed, emerge } = await startGatedBuilds(t, { version, names: ['k0', 'k1'], recipes: 2, barrier: 3, seconds: 0.3 })
      const makes = tagged(tag).filter((p) => p.argv[0] === 'make' || p.argv[0].endsWith('/make'))
      t.ok(makes.length >= 2, `2 makes run (${makes.map((m) => m.pid).join(' ')})`)
      const before = await stevedStatus(steved)
      for (const p of pkgs) t.equal(holdersOf(before, `app-misc/${p.name}-1`)[0]?.tokens, 1, `${p.name}: its job holds 1 token`)

      process.kill(emerge.pid, signal)
      if (signal === 'SIGKILL') {
        await finished(emerge)
        await waitUntil(() => pkgs.every((p) => /ending: pid \d+ \(\S+\), which ran the phases, is gone/.test(bed.holderLog(p.name))), 'both holders to notice that emerge is gone', 60_000)
      } else {
        // emerge terminates its jobs, but a phase's ebuild.sh traps SIGTERM with `exit 1`, which
        // bash runs only once the command in progress (make, waiting for its gated recipes)
        // returns: the builds go on, and emerge waits for them (seen: 265 s with a 120 s gate).
        await sleep(2000)
      }
      const left = makes.filter((m) => alive(m.pid))
      const during = await stevedStatus(steved)
      t.ok(left.length > 0, `make runs on after the ${signal} (${left.map((m) => m.pid).join(' ')})`)
      for (const p of pkgs) t.equal(holdersOf(during, `app-misc/${p.name}-1`)[0]?.tokens ?? 0, 1, `app-misc/${p.name}-1: the job still holds its token while its build runs`)

      fs.writeFileSync(go, '')
      const exit = await finished(emerge)
      if (signal === 'SIGTERM') t.not(exit.code, 0, `emerge exited (${exit.code ?? exit.signal}) after the ${signal}`)
      const after = await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 3, 'every token back', 120_000)
      t.same(makes.filter((m) => alive(m.pid)).map((m) => m.pid), [], 'no make outlived the tokens')
      t.equal(after.counters.reclaimed, 0, 'the holders gave their tokens back themselves')
      const ends = recipeEnds(log)
      for (const p of pkgs) {
        const lastEnd = Math.max(0, ...ends.filter((e) => e.name.startsWith(`${p.name}-`)).map((e) => e.end))
        const gave = /^(\S+) holder \d+ \S+: gave 1 token\(s\) back/m.exec(bed.holderLog(p.name))
        t.ok(gave, `${p.name}: the holder logged the release`)
        if (gave) t.ok(Date.parse(gave[1]) >= Math.floor(lastEnd), `${p.name}: released at ${gave[1]}, not before the last recipe ended (${new Date(lastEnd).toISOString()})`)
      }
    })
  }
}
