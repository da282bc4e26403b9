// Real GNU make 4.4.1 as the jobserver, jobclient inside its recipes, in both styles make
// offers: a named FIFO (`fifo:PATH`, the default) and an anonymous pipe (`R,W` fds, passed to
// `+` recipes only). Concurrency is computed from the times the work itself recorded; leaks
// are caught by make itself: the top make counts its tokens at exit and complains
// "INTERNAL: Exiting with N jobserver tokens available; should be M!" when any are missing.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { maxOverlap, parseJobLog } from '../../../test/helpers/joblog'
import { run } from '../../../test/helpers/proc'
import { FIXTURES, MAKE44, tmpDir } from './helpers/pool'

const WORKER = path.join(FIXTURES, 'make-worker.js')
const STYLES = ['fifo', 'pipe'] as const
const LEAK = /INTERNAL: Exiting with/

/** A Makefile whose targets each run one make-worker.js command line. */
function makefile(dir: string, recipes: Record<string, string>): string {
  const names = Object.keys(recipes)
  const file = path.join(dir, 'Makefile')
  let text = `all: ${names.join(' ')}\n.PHONY: all ${names.join(' ')}\n`
  for (const n of names) text += `${n}:\n\t+@${JSON.stringify(process.execPath)} ${WORKER} ${recipes[n]}\n`
  fs.writeFileSync(file, text)
  return file
}

async function make(dir: string, jobs: number, style: string) {
  return run(MAKE44, [`-j${jobs}`, `--jobserver-style=${style}`, '-f', path.join(dir, 'Makefile')], {
    cwd: dir,
    env: { ...process.env, MAKEFLAGS: '' },
    timeoutMs: 120000,
  })
}

t.test('the make under test is GNU make 4.4 or later', async (t) => {
  const r = await run(MAKE44, ['--version'])
  t.match(r.stdout, /^GNU Make 4\.([4-9]|\d\d)/)
})

const scenarios = [
  { what: 'one recipe fills the whole pool with its units', jobs: 4, targets: 1, units: 6 },
  { what: 'two recipes and their units share the pool', jobs: 4, targets: 2, units: 4 },
  { what: 'more recipes than slots, two units each', jobs: 3, targets: 5, units: 2 },
]

for (const style of STYLES) {
  for (const s of scenarios) {
    t.test(`${style}: ${s.what} (make -j${s.jobs})`, async (t) => {
      const dir = tmpDir(t)
      fs.mkdirSync(path.join(dir, 'live'))
      const barrier = Math.min(s.jobs, s.targets * s.units)
      const recipes: Record<string, string> = {}
      for (let i = 0; i < s.targets; i++) recipes[`r${i}`] = `units r${i} ${s.units} ${barrier} ${dir}`
      makefile(dir, recipes)
      const r = await make(dir, s.jobs, style)
      t.equal(r.code, 0, `make succeeded: ${r.stderr}`)
      t.notMatch(r.stderr, LEAK, 'make got every token back')
      t.notMatch(r.stderr, /warning|jobserver unavailable/, 'no jobserver complaint')
      const jobs = parseJobLog(fs.readFileSync(path.join(dir, 'jobs.log'), 'utf8'))
      t.equal(jobs.length, s.targets * s.units, 'every unit ran once')
      const peak = maxOverlap(jobs)
      t.ok(peak <= s.jobs, `peak ${peak} <= ${s.jobs}: the implicit slots counted, the pool respected`)
      t.equal(peak, barrier, `peak ${peak} reached ${barrier}: the tokens were really used`)
    })
  }

  t.test(`${style}: a worker that exits holding tokens still gives them back`, async (t) => {
    const dir = tmpDir(t)
    makefile(dir, { a: 'exit-holding a' })
    const r = await make(dir, 3, style)
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /a holds implicit and \d+/)
    t.notMatch(r.stderr, LEAK, 'no token missing at the end')
  })

  t.test(`${style}: control: a byte taken around jobclient is missed by make`, async (t) => {
    const dir = tmpDir(t)
    makefile(dir, { a: 'steal a' })
    const r = await make(dir, 3, style)
    t.match(r.stdout, /stole 1/)
    t.match(r.stderr, LEAK, "make's leak check sees a lost token, so the tests above can fail")
  })

  t.test(`${style}: an aborted acquire on an empty pool leaves nothing behind`, async (t) => {
    const dir = tmpDir(t)
    makefile(dir, { a: 'abort a' })
    const r = await make(dir, 3, style)
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /a held 3 polling true abort ABORT_ERR pending 0/, 'held the implicit slot and both tokens, then aborted a poll')
    t.notMatch(r.stderr, LEAK)
  })

  t.test(`${style}: signals during a wait on an empty pool do not end or break it`, async (t) => {
    const dir = tmpDir(t)
    makefile(dir, { a: 'eintr a' })
    const r = await make(dir, 3, style)
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /a signals 5 still waiting true then got explicit/)
    t.notMatch(r.stderr, LEAK)
  })

  t.test(`${style}: two recipes each wanting 4 of 5 slots both finish (acquireMany)`, async (t) => {
    const dir = tmpDir(t)
    makefile(dir, { a: `many a 4 ${dir}`, b: `many b 4 ${dir}` })
    const r = await make(dir, 5, style)
    t.equal(r.code, 0, r.stderr)
    t.notMatch(r.stderr, LEAK)
    const jobs = parseJobLog(fs.readFileSync(path.join(dir, 'jobs.log'), 'utf8'))
    t.equal(jobs.length, 2, 'both got their four')
    t.equal(maxOverlap(jobs), 1, 'never both at once: 4 + 4 > 5')
  })
}
