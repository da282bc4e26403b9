// JOBSERVER_MAX_JOBS under FEATURES=userpriv (Portage's default), with real emerge (3.0.73 and
// 3.0.83) against steved: pkg_setup runs as root, src_unpack … src_install as the portage user.
// steved's groups belong to the uid that made them (docs/control.md), so the root-made group of
// the package refuses the portage user's own joins (EPERM); the job's holder, root since it was
// started in setup, then joins those phases on their behalf. The capped build must stay at its
// cap while another build uses the rest of the pool, as in caps.test.ts.
//
// The test makes a throw-away user and group for Portage's `portage` (PORTAGE_USERNAME,
// PORTAGE_GRPNAME) and removes them at teardown, after killing every process of the test.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { run, start } from '../../../test/helpers/proc'
import { startSteved, tmpDir } from '../../../test/helpers/steved'
import { ProcFs } from '../dist/procfs'
import { processTag, stevedStatus, waitForStatus, writeRecipe } from './helpers/emerge'
import { capHeldOrPassed, cappedAndFree, finishCapped } from './helpers/capped'
import { ewarns, makeBed, PORTAGE_VERSIONS, throwAwayPortage } from './helpers/portage'

// Each real emerge takes 10-40 s on a shared 2-core machine; tap's default file limit is 300 s.
t.setTimeout(900_000)

/** Run as another user: connect to the holder socket argv[1], send request argv[2], print the replies. */
const ASK_HOLDER = `
const sock = require('node:net').connect(process.argv[1])
let out = ''
sock.on('data', (d) => (out += d))
sock.on('close', () => process.stdout.write(out))
sock.on('error', (e) => { process.stderr.write(String(e)); process.exitCode = 1 })
sock.write(process.argv[2] + '\\n')
`

for (const version of PORTAGE_VERSIONS) {
  t.test(`Portage ${version}, FEATURES=userpriv: JOBSERVER_MAX_JOBS=2 holds for the build phases run as the portage user`, async (t) => {
    const dir = tmpDir(t)
    // The portage user reaches the prefix, the recipes, the logs and the jobserver file (0666).
    fs.chmodSync(dir, 0o755)
    const steved = await startSteved(t, { jobs: 8, dir })
    const tag = processTag(t)
    const log = path.join(dir, 'recipes.log')
    const portage = throwAwayPortage(t, tag, [log, path.join(dir, 'jobs.log')])
    const recipe = writeRecipe(dir)
    const { packages, barrier: bA, gate: go } = cappedAndFree(dir, recipe, log, 0o777)
    const bed = makeBed({ version, jobserver: steved, dir, tag, packages, userpriv: portage })
    const emerge = bed.emerge(t, ['--jobs=2', 'app-misc/capped', 'app-misc/free'])
    const seen = await capHeldOrPassed(steved, emerge, bA)
    t.equal(fs.readdirSync(bA).length, 2, 'the capped build started 2 recipes before the gate opened, not more')
    t.equal(fs.statSync(path.join(bA, fs.readdirSync(bA)[0])).uid, portage.uid, 'src_compile ran as the portage user (userpriv is on)')
    const group = seen.groups.find((g) => g.name === 'app-misc/capped-1')
    t.equal(group?.limit, 2, "group limit 2: the holder's token and one token make may read")
    t.ok(group !== undefined && group.tokens <= 2, `the group holds ${group?.tokens} token(s)`)

    // The holder joins only this build's processes: a process without the job's
    // PORTAGE_BUILDDIR (here a root `sleep`), asked for by the portage user, stays out.
    const victim = start(t, 'sleep', ['300'], { env: { PATH: process.env.PATH, STEVED_EMERGE_TEST: tag } })
    const victimStart = new ProcFs().stat(victim.pid)!.start
    const ask = await run(
      'setpriv',
      ['--reuid', String(portage.uid), '--regid', portage.group, '--clear-groups', process.execPath, '-e', ASK_HOLDER, path.join(bed.builddir('capped'), '.steved-jobserver.sock'), JSON.stringify({ v: 1, op: 'join', pid: victim.pid, start: victimStart, phase: 'compile' })],
      { env: { PATH: process.env.PATH, STEVED_EMERGE_TEST: tag }, timeoutMs: 30_000 },
    )
    t.match(ask.stdout, /"type":"error","code":"ERR_SHIM_JOIN_REFUSED","message":"pid \d+ is not a process of this build/, 'the holder refuses to join a process of another build', { stderr: ask.stderr })
    const after = await stevedStatus(steved)
    t.notOk(after.groups.some((g) => g.members.includes(victim.pid) || g.roots.includes(victim.pid)), 'that process is in no group')
    victim.child.kill('SIGKILL')

    const cappedLog = await finishCapped(t, bed, emerge, go, log)
    t.same(ewarns(cappedLog).filter((w) => /jobserver/.test(w)), [], 'no jobserver warning in the capped build (no "JOBSERVER_MAX_JOBS is not applied")')
    t.match(bed.holderLog('capped'), /phase compile: joined pid \d+ \(uid \d+\) to group app-misc\/capped-1 on its behalf/, "the holder joined the compile phase to the group")
    t.notMatch(bed.buildLog('free'), /JOBSERVER_MAX_JOBS/)
    await waitForStatus(steved, (s) => s.holders.length === 0 && s.groups.length === 0 && s.pool.free === 8, 'every token back, the group gone')
  })
}
