// JOBSERVER_MAX_JOBS under FEATURES=pid-sandbox (Portage's default where the kernel allows it),
// with real emerge (3.0.73 and 3.0.83) against steved. Each phase then runs in its own pid
// namespace (pid-ns-init is its pid 1), so the phase's `$$` and the holder's own pid are pids of
// that namespace, not the ones steved sees: the shim must name the group's roots as "the
// caller's parent" (the phase's shell) and "the caller" (the holder) and let steved resolve
// them. The scenario and the checks are caps.test.ts's (helpers/capped.ts); on top of them,
// every root steved shows for the group while the build runs must be a process of this build
// (below emerge): a namespace-local pid taken as steved's names some other process of the
// machine (the shim did that before: kernel threads became the group's roots, and the group
// outlived the build).
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { startSteved, tmpDir } from '../../../test/helpers/steved'
import { ProcFs } from '../dist/procfs'
import { processTag, waitForStatus, writeRecipe, type StatusDoc } from './helpers/emerge'
import { capHeldOrPassed, cappedAndFree, finishCapped } from './helpers/capped'
import { ewarns, makeBed, PORTAGE_VERSIONS, throwAwayPortage } from './helpers/portage'

// Each real emerge takes 10-40 s on a shared 2-core machine; tap's default file limit is 300 s.
t.setTimeout(900_000)

const GROUP = 'app-misc/capped-1'

const proc = new ProcFs()
/** A process's parent, or null when it is gone. */
const parentOf = (pid: number): number | null => proc.stat(pid)?.ppid ?? null

/**
 * Roots of the group that are alive and are not processes of this build: neither emerge
 * (`emergePid`) nor one of its descendants. Under pid-sandbox the phases run below Portage's
 * pid-ns-init, which emerge started; kernel threads descend from kthreadd (pid 2).
 */
function strangers(s: StatusDoc, emergePid: number): Array<{ pid: number; comm: string }> {
  const out: Array<{ pid: number; comm: string }> = []
  for (const pid of s.groups.find((g) => g.name === GROUP)?.roots ?? []) {
    let cur: number | null = pid
    for (let i = 0; cur !== null && cur > 1 && cur !== emergePid && i < 64; i++) cur = parentOf(cur)
    if (cur === emergePid) continue
    let comm: string
    try {
      comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
    } catch {
      continue // gone since the status was taken
    }
    out.push({ pid, comm })
  }
  return out
}

const CASES = [
  ...PORTAGE_VERSIONS.map((version) => ({ version, userpriv: false })),
  // setup (root) makes the group and a root holder; both end with setup's namespace, so the
  // group ends too, and unpack … install (the portage user) make it afresh with a holder of
  // their own, as the portage user.
  ...PORTAGE_VERSIONS.map((version) => ({ version, userpriv: true })),
]

for (const c of CASES) {
  const { version } = c
  t.test(`Portage ${version}, FEATURES=pid-sandbox${c.userpriv ? ' userpriv' : ''}: JOBSERVER_MAX_JOBS=2 caps the build whose phases run in pid namespaces`, async (t) => {
    const dir = tmpDir(t)
    if (c.userpriv) fs.chmodSync(dir, 0o755)
    const steved = await startSteved(t, { jobs: 8, dir })
    const tag = processTag(t)
    const log = path.join(dir, 'recipes.log')
    const userpriv = c.userpriv ? throwAwayPortage(t, tag, [log, path.join(dir, 'jobs.log')]) : undefined
    const uid = userpriv?.uid ?? 0
    const recipe = writeRecipe(dir)
    const { packages, barrier: bA, gate: go } = cappedAndFree(dir, recipe, log, c.userpriv ? 0o777 : undefined)
    const bed = makeBed({ version, jobserver: steved, dir, tag, packages, userpriv, makeConf: ['FEATURES="${FEATURES} pid-sandbox"'] })
    const emerge = bed.emerge(t, ['--jobs=2', 'app-misc/capped', 'app-misc/free'])
    // Meanwhile every root of the group is checked.
    const foreign = new Map<number, string>()
    const seen = await capHeldOrPassed(steved, emerge, bA, (st) => {
      for (const x of strangers(st, emerge.pid)) foreign.set(x.pid, x.comm)
    })
    t.equal(fs.readdirSync(bA).length, 2, 'the capped build started 2 recipes before the gate opened, not more')
    t.equal(fs.statSync(path.join(bA, fs.readdirSync(bA)[0])).uid, uid, `src_compile ran as ${c.userpriv ? 'the portage user (userpriv is on)' : 'root'}`)
    const group = seen.groups.find((g) => g.name === GROUP)
    t.equal(group?.limit, 2, "group limit 2: the holder's token (it pays for make's implicit slot) and one token make may read")
    t.ok(group !== undefined && group.tokens <= 2, `the group holds ${group?.tokens} token(s)`)
    const cappedLog = await finishCapped(t, bed, emerge, go, log)
    t.same(ewarns(cappedLog).filter((w) => /jobserver/.test(w)), [], 'no jobserver warning in the capped build (no "JOBSERVER_MAX_JOBS is not applied")')
    t.match(cappedLog, /jobserver: FEATURES=pid-sandbox ended the holder of app-misc\/capped-1's token with the last phase; taking the token again/, 'pid-sandbox was on (the holder was killed with a phase)')
    t.notMatch(bed.buildLog('free'), /JOBSERVER_MAX_JOBS/)
    t.same([...foreign].map(([pid, comm]) => `${pid} (${comm})`), [], "every root of the group was a process of this build, as steved sees it")
    await waitForStatus(steved, (s) => s.holders.length === 0 && s.groups.length === 0 && s.pool.free === 8, 'every token back, the group gone')
  })
}
