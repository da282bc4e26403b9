// A failed build gives its token back, with real emerge (3.0.73 and 3.0.83, the README's
// set-up) against steved: emake dies in src_compile, Portage runs the die hooks, and the holder
// gives the token back only once the build's processes are gone: make waits for its other
// running recipe before it exits, and the token goes back after that recipe ended. The other
// package (--keep-going) builds before or after it, never at the same time (one token).
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { maxOverlap, parseJobLog } from '../../../test/helpers/joblog'
import { startSteved, tmpDir } from '../../../test/helpers/steved'
import { processTag, waitForStatus, writeRecipe } from './helpers/emerge'
import { finished, makeBed, PORTAGE_VERSIONS } from './helpers/portage'

// Each real emerge takes 10-40 s on a shared 2-core machine; tap's default file limit is 300 s.
t.setTimeout(900_000)

for (const version of PORTAGE_VERSIONS) {
  t.test(`Portage ${version}: a build that fails in src_compile gives its token back after its last recipe; the other package builds (--keep-going)`, async (t) => {
    const dir = tmpDir(t)
    const steved = await startSteved(t, { jobs: 1, dir })
    const tag = processTag(t)
    const recipe = writeRecipe(dir)
    const log = path.join(dir, 'jobs.log')
    // With the only token held by the job, its make runs one recipe at a time: "slow" first
    // (make's order), then "fail". With -k absent make stops at the failure.
    const bad =
      `all: slow fail\n.PHONY: all slow fail\n` +
      `slow:\n\t@sh ${recipe} bad-slow ${log} / 0 - 1.5\n` +
      `fail:\n\t@sh ${recipe} bad-fail ${log} / 0 - 0.1; exit 1\n`
    const good = `all: a b\n.PHONY: all a b\na b:\n\t@sh ${recipe} good-$@ ${log} / 0 - 0.2\n`
    const bed = makeBed({ version, jobserver: steved, dir, tag, packages: [{ name: 'bad', makefile: bad }, { name: 'good', makefile: good }] })
    const done = await finished(bed.emerge(t, ['--jobs=2', '--keep-going', 'app-misc/bad', 'app-misc/good']))
    t.equal(done.code, 1, 'emerge reports the failure')
    t.notOk(bed.installed('bad'), 'bad was not merged')
    t.ok(bed.installed('good'), 'good was merged', { output: done.stdout.slice(-3000) })
    const out = bed.buildLog('bad')
    t.match(out, /emake failed/, 'emake died in src_compile')
    t.match(out, /jobserver: app-misc\/bad-1 failed; its token goes back once its \d+ remaining process\(es\) are gone/, 'the die hook said what happens to the token')
    const holder = bed.holderLog('bad')
    t.match(holder, /end \(failed\) from pid \d+/, 'the holder was told by the die hook')
    const gave = /^(\S+) holder \d+ \S+: gave 1 token\(s\) back/m.exec(holder)
    t.ok(gave, 'the holder gave its token back')
    // The failed job never reaches src_install, where its job line would end.
    const recipes = parseJobLog(fs.readFileSync(log, 'utf8').split('\n').filter((l) => !/ job-bad-1 /.test(l)).join('\n')).filter((r) => !r.name.startsWith('job-'))
    const badEnd = Math.max(...recipes.filter((r) => r.name.startsWith('bad-')).map((r) => r.end))
    t.ok(gave && Date.parse(gave[1]) >= Math.floor(badEnd), `given back at ${gave?.[1]}, after bad's last recipe ended at ${new Date(badEnd).toISOString()}`)
    t.equal(maxOverlap(recipes), 1, 'one recipe at a time in all: the builds took turns with the only token')
    const st = await waitForStatus(steved, (s) => s.holders.length === 0 && s.pool.free === 1, 'the token back')
    t.equal(st.counters.reclaimed, 0, 'given back by the holders, not reclaimed from a dead process')
  })
}
