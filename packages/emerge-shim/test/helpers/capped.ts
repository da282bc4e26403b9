// The per-package cap scenario that caps.test.ts and userpriv.test.ts both run under real emerge
// on a pool of 8: app-misc/capped (JOBSERVER_MAX_JOBS=2, 6 recipes; two must run at once, then
// they wait for the gate until the test has seen the cap hold make back) and app-misc/free (10
// recipes, 6 at once: all of the pool the capped build may not use).
import * as fs from 'node:fs'
import * as path from 'node:path'
import type { Test } from 'tap'
import { maxOverlap, parseJobLog } from '../../../../test/helpers/joblog'
import type { Started } from '../../../../test/helpers/proc'
import type { RunningSteved } from '../../../../test/helpers/steved'
import { makefile, sleep, stevedStatus, type StatusDoc } from './emerge'
import { finished, type Bed } from './portage'

/** A waiter of group `name` held back by the group's cap while the pool has tokens to give. */
export const capBinds = (name: string) => (s: StatusDoc) => {
  const g = s.groups.find((x) => x.name === name)
  return g !== undefined && s.waiters.some((w) => g.members.includes(w.pid) && w.reason === 'group-limit')
}

/**
 * The two packages, their recipes logging to `log`. `barrierMode`: the barrier directories'
 * mode, for builds that run as another user. `barrier`: where the capped build's recipes
 * meet; `gate`: the file that lets them go on.
 */
export function cappedAndFree(dir: string, recipe: string, log: string, barrierMode?: number) {
  const [bA, bB] = ['barrier-capped', 'barrier-free'].map((d) => {
    fs.mkdirSync(path.join(dir, d))
    if (barrierMode !== undefined) fs.chmodSync(path.join(dir, d), barrierMode)
    return path.join(dir, d)
  })
  const gate = path.join(dir, 'go-capped')
  const capped = {
    name: 'capped',
    env: { JOBSERVER_MAX_JOBS: '2' },
    makefile: makefile({ prefix: 'capped', n: 6, recipe, log, barrier: 2, barrierDir: bA, gate, seconds: 0.1 }),
  }
  const free = { name: 'free', makefile: makefile({ prefix: 'free', n: 10, recipe, log, barrier: 6, barrierDir: bB, seconds: 0.3 }) }
  return { packages: [capped, free], barrier: bA, gate }
}

/**
 * Wait until the cap holds the capped build's make back at 2 running recipes, or until more
 * than 2 have started: the cap does not hold (every capped recipe waits for the gate, so none
 * ends before). Either way the test goes on to assert which. `each` sees every status read on
 * the way. Returns the last status.
 */
export async function capHeldOrPassed(steved: RunningSteved, emerge: Started, barrier: string, each: (s: StatusDoc) => void = () => {}): Promise<StatusDoc> {
  let ended = false
  void emerge.exited.then(() => (ended = true))
  const until = Date.now() + 120_000
  for (;;) {
    const seen = await stevedStatus(steved)
    each(seen)
    const started = fs.readdirSync(barrier).length
    if (started > 2 || (started === 2 && capBinds('app-misc/capped-1')(seen))) return seen
    const why = ended ? 'emerge exited' : Date.now() > until ? 'timed out' : null
    if (why) throw new Error(`${why} before the cap held the capped build's make back or the build passed it; emerge: ${emerge.output().slice(-3000)}; last status: ${JSON.stringify(seen)}`)
    await sleep(100)
  }
}

/** What the recipes recorded: the capped build at 2 jobs, the other one using the rest of the pool. */
export function checkCapHeld(t: Test, log: string): void {
  const jobs = parseJobLog(fs.readFileSync(log, 'utf8'))
  const a = jobs.filter((j) => j.name.startsWith('capped-'))
  const b = jobs.filter((j) => j.name.startsWith('free-'))
  t.equal(a.length, 6)
  t.equal(b.length, 10)
  t.equal(maxOverlap(a), 2, 'the capped build ran 2 jobs at once at most (and reached 2)')
  t.ok(maxOverlap(b) >= 6, `the uncapped build ran ${maxOverlap(b)} jobs at once: the rest of the pool`)
  t.ok(maxOverlap(jobs) <= 8, `${maxOverlap(jobs)} jobs at once in all, within the pool of 8`)
}

/**
 * Open the gate and let emerge finish: both packages merged, the recipes' record of the cap
 * (checkCapHeld), and the capped build saying it is capped. Returns the capped build's log.
 */
export async function finishCapped(t: Test, bed: Bed, emerge: Started, gate: string, log: string): Promise<string> {
  fs.writeFileSync(gate, '')
  const done = await finished(emerge)
  t.equal(done.code, 0, 'emerge finished', { output: done.stdout.slice(-3000) })
  t.ok(bed.installed('capped') && bed.installed('free'), 'both merged')
  checkCapHeld(t, log)
  const cappedLog = bed.buildLog('capped')
  t.match(cappedLog, /JOBSERVER_MAX_JOBS=2: this build runs at most 2 job\(s\) at once \(steved group app-misc\/capped-1/)
  return cappedLog
}
