// Who holds the job tokens, with real emerge against steved, at a moment when both of two
// package builds compile (each make runs its one recipe on its implicit slot and holds nothing):
//   - Portage 3.0.73 (no native jobserver-token) and 3.0.83 without FEATURES=jobserver-token,
//     the README as written: the shim's holder of each job holds exactly 1 token, emerge none;
//   - Portage 3.0.83 with FEATURES=jobserver-token: emerge holds exactly 1 token per job
//     (2), the shim none, and it says so once per job; started with MAKEFLAGS in its own
//     environment (under make or stevie) its first job runs on that client's implicit slot,
//     the one place where the build runs tokens + 1 jobs.
import * as fs from 'node:fs'
import t from 'tap'
import { holdersOf, stevedStatus, waitForStatus } from './helpers/emerge'
import { startGatedBuilds } from './helpers/gated'
import { finished, type PortageVersion } from './helpers/portage'

// Each real emerge takes 10-40 s on a shared 2-core machine; tap's default file limit is 300 s.
t.setTimeout(900_000)

const variants: Array<{ version: PortageVersion; featuresToken: boolean; underMake?: boolean }> = [
  { version: '3.0.73', featuresToken: false },
  { version: '3.0.83', featuresToken: false },
  { version: '3.0.83', featuresToken: true },
  // emerge started under a jobserver client (MAKEFLAGS in its own environment, as under make or
  // stevie): Portage >= 3.0.76 runs its first job on that client's implicit slot.
  { version: '3.0.83', featuresToken: true, underMake: true },
]

for (const { version, featuresToken, underMake } of variants) {
  const native = featuresToken
  const what = underMake ? ' with FEATURES=jobserver-token and MAKEFLAGS in its environment' : featuresToken ? ' with FEATURES=jobserver-token' : ', the README as written'
  const holds = underMake ? 'emerge holds one token for the second job, the first runs on the implicit slot' : `${native ? 'emerge' : 'the shim'} holds exactly one token per job`
  t.test(`Portage ${version}${what}: ${holds} while 2 builds compile`, async (t) => {
    const { steved, go, pkgs, bed, emerge } = await startGatedBuilds(t, { version, featuresToken, names: ['n0', 'n1'], recipes: 1, barrier: 2, seconds: 0.1, underMake })
    const st = await stevedStatus(steved)
    const byEmerge = st.holders.find((h) => h.pid === emerge.pid)?.tokens ?? 0
    const shim = st.holders.filter((h) => h.cmdline.includes(' holder '))
    if (underMake) {
      t.equal(byEmerge, 1, 'emerge holds 1 token: the other job runs on the implicit slot of whatever started emerge')
      t.same(shim, [], 'no shim holder')
    } else if (native) {
      t.equal(byEmerge, 2, 'emerge holds 2 tokens: one per job')
      t.same(shim, [], 'no shim holder')
    } else {
      t.equal(byEmerge, 0, 'emerge holds no token')
      for (const p of pkgs) t.equal(holdersOf(st, `app-misc/${p.name}-1`)[0]?.tokens, 1, `${p.name}: its holder holds 1 token`)
      t.equal(shim.length, 2, 'two shim holders in all')
    }
    t.equal(st.pool.held, underMake ? 1 : 2, 'nothing else holds a token (the makes run on their implicit slots)')
    fs.writeFileSync(go, '')
    const done = await finished(emerge)
    t.equal(done.code, 0, 'emerge finished', { output: done.stdout.slice(-3000) })
    for (const p of pkgs) {
      const out = bed.buildLog(p.name)
      const notes = out.match(/jobserver: Portage 3\.0\.83 implements FEATURES=jobserver-token itself \(found from \S+portage\/__init__\.py\): emerge holds this job's token, the shim takes no second one/g) ?? []
      t.equal(notes.length, native ? 1 : 0, `${p.name}: ${native ? 'says once that emerge holds the token' : 'no such note'}`)
      t.equal(bed.holderLog(p.name) === '', native, `${p.name}: ${native ? 'no holder was started' : 'a holder ran'}`)
    }
    const after = await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 3, 'every token back')
    t.equal(after.counters.reclaimed, 0, 'none reclaimed')
  })
}
