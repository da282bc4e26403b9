// bench/run.sh: a partial or --quick run never edits tracked files (README.md, bench/results/),
// and writes where it says it writes. Runs the real script with its `report` section (it draws
// plots from JSON, so it takes seconds); needs root and /dev/fuse like every bench run.

import { spawnSync } from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { run } from './helpers/proc'
import { ROOT, requireFuseRoot } from './helpers/steved'

const RESULTS = path.join(ROOT, 'bench', 'results')

/** Hash of every tracked file a full run would rewrite. */
function tracked(): Map<string, string> {
  const files = spawnSync('git', ['ls-files', 'README.md', 'bench/results'], { cwd: ROOT, encoding: 'utf8' }).stdout.split('\n').filter(Boolean)
  if (files.length < 2) throw new Error(`git ls-files found no committed bench results in ${ROOT}`)
  return new Map(files.map((f) => [f, crypto.createHash('sha256').update(fs.readFileSync(path.join(ROOT, f))).digest('hex')]))
}

/** Remove an output directory afterwards only if this test made it (a developer's own stay). */
function cleanUpIfNew(t: { teardown(fn: () => void): void }, dir: string): void {
  if (!fs.existsSync(dir)) t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
}

t.test('a partial run (report only) writes bench/results/partial/ and leaves README and the results alone', async (t) => {
  requireFuseRoot()
  const out = path.join(RESULTS, 'partial')
  cleanUpIfNew(t, out)
  const before = tracked()
  const r = await run('bash', [path.join(ROOT, 'bench', 'run.sh'), 'report'], { cwd: ROOT, timeoutMs: 600000 })
  t.equal(r.code, 0, `bench/run.sh report: ${r.stderr.slice(-2000)}`)
  t.same(tracked(), before, 'no tracked file changed')
  t.match(r.stdout, /\[bench\] done in \d+ s: bench\/results\/partial\/summary\.md, bench\/results\/partial\/\*\.png/, 'it says where it wrote')
  const summary = fs.readFileSync(path.join(out, 'summary.md'), 'utf8')
  t.match(summary, /Plots: `bench\/results\/partial\/\*\.png`/, 'the summary names the directory it is in')
  t.notMatch(summary, /no results yet/, 'sections not run come from the committed results')
  for (const png of ['transport.png', 'concurrency.png', 'reclaim.png', 'scale.png']) t.ok(fs.existsSync(path.join(out, png)), `${png} is there`)
})

t.test('--quick writes bench/results/quick/, says so in its summary, and leaves README and the results alone', async (t) => {
  requireFuseRoot()
  const out = path.join(RESULTS, 'quick')
  cleanUpIfNew(t, out)
  const before = tracked()
  const r = await run('bash', [path.join(ROOT, 'bench', 'run.sh'), '--quick', 'report'], { cwd: ROOT, timeoutMs: 600000 })
  t.equal(r.code, 0, `bench/run.sh --quick report: ${r.stderr.slice(-2000)}`)
  t.same(tracked(), before, 'no tracked file changed')
  t.match(r.stdout, /results in bench\/results\/quick\b/)
  t.ok(fs.existsSync(path.join(out, 'summary.md')), 'quick/summary.md written')
  for (const f of ['bench/results/quick/summary.md', 'bench/results/partial/summary.md']) {
    t.equal(spawnSync('git', ['check-ignore', '-q', f], { cwd: ROOT }).status, 0, `${f} is ignored by git`)
  }
})
