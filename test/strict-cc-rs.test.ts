// cc-rs 1.0.88 (vendored by scripts/setup.sh) in a build script, under real cargo: its own
// jobserver client takes `fifo:PATH` only when PATH is a real named pipe, so on steved's FUSE
// file it falls back to $NUM_JOBS compiles of its own; under `jobclient fifo` it draws from
// the pool. Every C compile records its own times (test/helpers/cbuild.ts).

import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import t from 'tap'

import { JOBCLIENT, writeCcWrapper } from './helpers/cbuild'
import { maxOverlap, parseJobLog } from './helpers/joblog'
import { run } from './helpers/proc'
import { ROOT, startSteved, tmpDir, waitForStatus } from './helpers/steved'

const CRATE = path.join(ROOT, 'test', 'fixtures', 'cc-rs-crate')
const VENDOR = path.join(CRATE, 'vendor')
const UNITS = 16

function findCargo(): string {
  for (const dir of (process.env.PATH ?? '').split(':').concat(path.join(os.homedir(), '.cargo', 'bin'))) {
    const c = path.join(dir, 'cargo')
    if (fs.existsSync(c)) return c
  }
  throw new Error('cargo not found (this test needs rustup cargo on PATH or in ~/.cargo/bin)')
}

/** A copy of the crate in `dir` that builds offline from the vendored sources. */
function crateCopy(dir: string): string {
  if (!fs.existsSync(path.join(VENDOR, 'cc', 'Cargo.toml'))) {
    throw new Error(`${VENDOR} is missing: scripts/setup.sh vendors cc-rs there (needs crates.io once)`)
  }
  const c = path.join(dir, 'crate')
  fs.mkdirSync(path.join(c, 'src'), { recursive: true })
  fs.mkdirSync(path.join(c, '.cargo'))
  for (const f of ['Cargo.toml', 'Cargo.lock', 'build.rs', path.join('src', 'main.rs')]) fs.copyFileSync(path.join(CRATE, f), path.join(c, f))
  fs.writeFileSync(
    path.join(c, '.cargo', 'config.toml'),
    `[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "${VENDOR}"\n`,
  )
  return c
}

const cargo = findCargo()

t.test('cc-rs 1.0.88 refuses the FUSE file and escapes the pool; under jobclient fifo it stays inside', async (t) => {
  const JOBS = 1
  const dir = tmpDir(t, 'steved-ccrs-')
  const s = await startSteved(t, { jobs: JOBS, dir })
  const cc = writeCcWrapper(dir, 300)
  const crate = crateCopy(dir)
  const env: NodeJS.ProcessEnv = { ...process.env, CC: cc, MAKEFLAGS: s.makeflags, CARGO_TARGET_DIR: path.join(dir, 'target') }
  delete env.CARGO_MAKEFLAGS
  delete env.MFLAGS

  // -j 6 sets NUM_JOBS=6 for the build script (cargo itself ignores -j under a jobserver).
  const bareLog = path.join(dir, 'bare.log')
  const bare = await run(cargo, ['build', '--offline', '-j', '6'], { cwd: crate, env: { ...env, CCLOG: bareLog }, timeoutMs: 600000 })
  t.equal(bare.code, 0, `cargo built the crate: ${bare.stderr}`)
  const barePeak = maxOverlap(parseJobLog(fs.readFileSync(bareLog, 'utf8')))
  t.ok(barePeak > JOBS + 1, `without the bridge cc-rs ran ${barePeak} compiles at once, over ${JOBS} token + 1 implicit slot`)

  // The same build again from scratch, through the bridge.
  fs.rmSync(path.join(dir, 'target'), { recursive: true, force: true })
  const log = path.join(dir, 'bridged.log')
  const r = await run(process.execPath, [JOBCLIENT, 'fifo', '--', cargo, 'build', '--offline', '-j', '6'], {
    cwd: crate,
    env: { ...env, CCLOG: log },
    timeoutMs: 600000,
  })
  t.equal(r.code, 0, `cargo built the crate under jobclient fifo: ${r.stderr}`)
  t.notMatch(r.stderr, /failed to connect to jobserver/, 'cargo took the pipe as its jobserver')
  const jobs = parseJobLog(fs.readFileSync(log, 'utf8'))
  t.equal(jobs.length, UNITS, 'every C file was compiled once')
  const peak = maxOverlap(jobs)
  t.ok(peak <= JOBS + 1, `cc-rs ran at most ${peak} <= ${JOBS} token + 1 implicit slot`)
  t.ok(peak >= 2, `cc-rs ran ${peak} compiles at once: it took the token through the pipe`)
  const rep = await waitForStatus(s, (x) => x.pool.free === JOBS, 'every token back')
  t.equal(rep.counters.reclaimed, 0, 'the bridge returned every token itself')
})
