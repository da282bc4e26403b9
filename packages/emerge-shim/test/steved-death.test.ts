// steved dies (SIGKILL: the FUSE file is left a dead mount, ENOTCONN) while two builds compile
// under real emerge: nothing hangs. Each make stops at its next jobserver read ("read jobs
// pipe: Transport endpoint is not connected"), emake fails, emerge exits 1, and no process of
// the builds is left: on 3.0.73 the die hooks end the shim's holders (whose tokens died with
// steved); on 3.0.83
// with FEATURES=jobserver-token emerge itself reports "Jobserver I/O failed, terminating".
import * as fs from 'node:fs'
import t from 'tap'
import { sleep, tagged, waitUntil } from './helpers/emerge'
import { startGatedBuilds } from './helpers/gated'
import { finished, type PortageVersion } from './helpers/portage'

// Each real emerge takes 10-40 s on a shared 2-core machine; tap's default file limit is 300 s.
t.setTimeout(900_000)

const variants: Array<{ version: PortageVersion; featuresToken: boolean }> = [
  { version: '3.0.73', featuresToken: false },
  { version: '3.0.83', featuresToken: true },
]

for (const { version, featuresToken } of variants) {
  t.test(`Portage ${version}${featuresToken ? ' with FEATURES=jobserver-token' : ', the README as written'}: steved killed while 2 builds compile: the builds fail, emerge exits 1, nothing is left`, async (t) => {
    // 3 recipes running (both builds compile), then each make wants its next token.
    const { steved, tag, go, pkgs, bed, emerge } = await startGatedBuilds(t, { version, featuresToken, names: ['d0', 'd1'], recipes: 3, barrier: 3, seconds: 0.2 })
    steved.child.kill('SIGKILL')
    await sleep(500)
    fs.writeFileSync(go, '')
    const done = await finished(emerge)
    t.equal(done.code, 1, 'emerge exits 1', { output: done.stdout.slice(-3000) })
    for (const p of pkgs) {
      t.notOk(bed.installed(p.name), `${p.name} was not merged`)
      t.match(bed.buildLog(p.name), /read jobs pipe: Transport endpoint is not connected/, `${p.name}: make stopped at its next jobserver read`)
      if (!featuresToken) {
        t.match(bed.holderLog(p.name), /end \(failed\) from pid \d+/, `${p.name}: the die hook ended the shim's holder`)
        t.match(bed.holderLog(p.name), /is a dead steved mount \(steved stopped or crashed\)/, `${p.name}: the holder logged why its token could not go back`)
      }
    }
    if (featuresToken) t.match(done.stdout + done.stderr, /Jobserver I\/O failed, terminating/, 'emerge reports the dead jobserver')
    await waitUntil(() => tagged(tag).length === 0, 'every process of the builds to be gone', 30_000)
    t.pass('no process of the builds is left')
  })
}
