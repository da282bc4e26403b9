// Test helpers of the emerge shim: a fake emerge (test/harness/fake-emerge.js) running package
// jobs the way Portage does, whose ebuilds record what the tests assert on:
//   - jobs.log: "start NAME NS" / "end NAME NS" for every make recipe, and for every package
//     job ("job-PF", from pkg_setup to the end of src_install: inside the time it holds its token);
//   - ${T}/status-PHASE.json: steved's status document taken in each build phase, after the
//     bashrc module ran, with the time it was asked for in ${T}/probes;
//   - ${T}/build.log: everything the job printed (the module's einfo/ewarn lines among it);
//   - ${T}/steved-jobserver.log: the holder's own log.
// Every process a test starts carries STEVED_EMERGE_TEST=<tag> in its environment (the holder
// inherits it too) and is SIGKILLed at teardown, whatever happened.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { run, start, type Started } from '../../../../test/helpers/proc'
import { MAKE44, ROOT, type RunningSteved } from '../../../../test/helpers/steved'

export const PKG = path.resolve(__dirname, '..', '..')
export const HELPER_BIN = path.join(PKG, 'bin', 'steved-emerge-shim.js')
export const MODULE = path.join(PKG, 'share', 'steved-jobserver.bashrc')
export const HARNESS = path.join(PKG, 'test', 'harness')
export const STEVECTL = path.join(ROOT, 'packages', 'steved', 'bin', 'stevectl.js')
export const JOBCLIENT = path.join(ROOT, 'packages', 'jobclient', 'dist', 'index.js')
export { MAKE44 }

interface Teardown {
  teardown(fn: () => unknown): void
}

/** The live processes started with STEVED_EMERGE_TEST=tag, with their argv. */
export function tagged(tag: string): Array<{ pid: number; argv: string[] }> {
  const entry = `STEVED_EMERGE_TEST=${tag}`
  const out: Array<{ pid: number; argv: string[] }> = []
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue
    try {
      if (fs.readFileSync(`/proc/${name}/environ`, 'utf8').split('\0').includes(entry)) {
        const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8')
        const argv = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').slice(0, -1)
        if (!/\) [ZX] /.test(stat)) out.push({ pid: Number(name), argv })
      }
    } catch {
      // gone, or a kernel thread
    }
  }
  return out
}

export function taggedPids(tag: string): number[] {
  return tagged(tag).map((p) => p.pid)
}

/** Whether the process runs (exists and is not a zombie). */
export function alive(pid: number): boolean {
  try {
    return !/\) [ZX] /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/** A tag for this test's processes; they are all SIGKILLed at teardown. Never throws. */
export function processTag(t: Teardown): string {
  const tag = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`
  t.teardown(async () => {
    for (let i = 0; i < 50; i++) {
      const pids = taggedPids(tag)
      if (pids.length === 0) return
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {
          // already gone
        }
      }
      await sleep(100)
    }
  })
  return tag
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Wait until `pred` holds, or fail with `what` after `ms` (a deadlock guard, not a measurement). */
export async function waitUntil<T>(pred: () => T | undefined | null | false, what: string, ms = 60_000): Promise<T> {
  const until = Date.now() + ms
  for (;;) {
    const v = pred()
    if (v) return v
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

/** /etc/portage/bashrc as the README tells users to write it. */
export function writeUserBashrc(dir: string): string {
  const file = path.join(dir, 'bashrc')
  fs.writeFileSync(
    file,
    `# /etc/portage/bashrc\n` +
      `if [[ -r ${MODULE} ]]; then\n` +
      `\tsource ${MODULE}\n` +
      `\tsteved_jobserver_hook\n` +
      `fi\n`,
  )
  return file
}

/**
 * A recipe: logs its start, optionally waits until `barrier` recipes (of the same barrier
 * directory) have started and until a gate file exists, sleeps, logs its end. The waits give
 * up after 120 s (the recipe then fails): they are deadlock guards.
 */
export function writeRecipe(dir: string): string {
  const file = path.join(dir, 'recipe.sh')
  fs.writeFileSync(
    file,
    `#!/bin/sh
# recipe.sh NAME LOG BARRIER_DIR BARRIER_N GATE SECONDS
name=$1 log=$2 bdir=$3 bn=$4 gate=$5 secs=$6
echo "start $name $(date +%s%N)" >> "$log"
if [ "$bn" -gt 0 ]; then
  : > "$bdir/$name"
  i=0
  while [ "$(ls "$bdir" | wc -l)" -lt "$bn" ]; do
    sleep 0.05; i=$((i+1)); [ $i -lt 2400 ] || { echo "recipe $name: barrier of $bn not reached" >&2; exit 1; }
  done
fi
if [ "$gate" != - ]; then
  i=0
  while [ ! -e "$gate" ]; do
    sleep 0.05; i=$((i+1)); [ $i -lt 2400 ] || { echo "recipe $name: gate $gate never opened" >&2; exit 1; }
  done
fi
sleep "$secs"
echo "end $name $(date +%s%N)" >> "$log"
`,
  )
  return file
}

export interface MakefileOptions {
  /** Recipe names are PREFIX-0 ... PREFIX-(n-1). */
  prefix: string
  n: number
  recipe: string
  log: string
  /** Every recipe waits until this many recipes sharing `barrierDir` have started (0: no wait). */
  barrier?: number
  barrierDir?: string
  /** Every recipe waits for this file. */
  gate?: string
  seconds?: number
  /** Make the recipe PREFIX-0 fail. */
  fail?: boolean
}

/** A Makefile with n independent recipes (make runs them in parallel as far as it has slots). */
export function makefile(o: MakefileOptions): string {
  const names = Array.from({ length: o.n }, (_, i) => `${o.prefix}-${i}`)
  const args = `${o.log} ${o.barrierDir ?? '/'} ${o.barrier ?? 0} ${o.gate ?? '-'} ${o.seconds ?? 0.2}`
  return (
    `all: ${names.join(' ')}\n.PHONY: all ${names.join(' ')}\n` +
    names.map((n, i) => `${n}:\n\t@sh ${o.recipe} $@ ${args}${o.fail && i === 0 ? '; exit 1' : ''}\n`).join('')
  )
}

/**
 * An ebuild whose phases record the job's interval in STEVED_TEST_JOBLOG, probe steved's status
 * when STEVED_TEST_PROBE is set, and whose src_compile runs GNU make 4.4 with no -j (its
 * MAKEFLAGS come from the environment: the jobserver) and dies when make fails.
 */
export function writeEbuild(dir: string, name = 'test.ebuild'): string {
  const file = path.join(dir, name)
  fs.writeFileSync(
    file,
    `# Written by the emerge-shim tests.
EAPI=8
steved_test_probe() {
	[[ -n \${STEVED_TEST_PROBE-} ]] || return 0
	local at
	at=$(date +%s%N)
	"\${STEVED_TEST_NODE}" "\${STEVED_TEST_STEVECTL}" status --json > "\${T}/status-\${EBUILD_PHASE}.json" || die "status probe failed"
	echo "\${EBUILD_PHASE} \${at}" >> "\${T}/probes"
}
pkg_setup() {
	echo "start job-\${PF} $(date +%s%N)" >> "\${STEVED_TEST_JOBLOG}"
	steved_test_probe
}
src_unpack() { steved_test_probe; }
src_prepare() { steved_test_probe; }
src_configure() { steved_test_probe; }
src_compile() {
	steved_test_probe
	"\${STEVED_TEST_MAKE}" -C "\${S}" || die "make failed"
}
src_test() { steved_test_probe; }
src_install() {
	steved_test_probe
	echo "end job-\${PF} $(date +%s%N)" >> "\${STEVED_TEST_JOBLOG}"
}
`,
  )
  return file
}

export interface JobSpec {
  category: string
  pf: string
  /** package.env: JOBSERVER_TOKENS, JOBSERVER_MAX_JOBS, ... */
  env?: Record<string, string>
  /** Files put into ${S} (the Makefile). */
  files?: Record<string, string>
  /** PHASE -> FILE: fake-emerge waits for FILE before it starts PHASE. */
  gates?: Record<string, string>
}

export interface EmergeRun {
  started: Started
  /** Events fake-emerge printed so far. */
  events(): Array<Record<string, unknown>>
  /** Resolves when fake-emerge exits (it exits 0 once every job is over). */
  exited: Started['exited']
  builddir(job: JobSpec | string): string
}

export interface EmergeOptions {
  /** The jobserver: a running steved, or any path (a FIFO) for MAKEFLAGS=--jobserver-auth=fifo:PATH. */
  steved: RunningSteved | { path: string; makeflags?: string }
  dir: string
  tag: string
  jobs: JobSpec[]
  /** make.conf-like variables for every job (FEATURES defaults to "sandbox jobserver-token"). */
  env?: Record<string, string>
  /** Do what Portage >= 3.0.74 does with FEATURES=jobserver-token (take a token per job itself). */
  nativeToken?: boolean
}

/** Start fake-emerge on `jobs`, all at once. */
export function runEmerge(t: Teardown, o: EmergeOptions): EmergeRun {
  const ebuild = writeEbuild(o.dir)
  const tmpdir = path.join(o.dir, 'portage-tmp')
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    LANG: 'C',
    MAKEFLAGS: o.steved.makeflags ?? `--jobserver-auth=fifo:${o.steved.path}`,
    FEATURES: 'sandbox userpriv jobserver-token',
    PORTAGE_BASHRC: writeUserBashrc(o.dir),
    STEVED_JOBSERVER_HELPER: HELPER_BIN,
    STEVED_EMERGE_TEST: o.tag,
    STEVED_TEST_JOBLOG: path.join(o.dir, 'jobs.log'),
    STEVED_TEST_MAKE: MAKE44,
    STEVED_TEST_NODE: process.execPath,
    STEVED_TEST_STEVECTL: STEVECTL,
    ...o.env,
  }
  const planFile = path.join(o.dir, `plan-${Math.random().toString(36).slice(2, 8)}.json`)
  const plan = {
    harness: HARNESS,
    tmpdir,
    env,
    nativeToken: o.nativeToken ?? false,
    jobserver: o.steved.path,
    jobclient: JOBCLIENT,
    jobs: o.jobs.map((j) => ({ ...j, ebuild })),
  }
  fs.writeFileSync(planFile, JSON.stringify(plan, null, 2))
  const started = start(t, process.execPath, [path.join(HARNESS, 'fake-emerge.js'), planFile], {
    env: { PATH: env.PATH, STEVED_EMERGE_TEST: o.tag },
  })
  return {
    started,
    exited: started.exited,
    events: () =>
      started
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    builddir: (job) => path.join(tmpdir, 'portage', typeof job === 'string' ? job : `${job.category}/${job.pf}`),
  }
}

/** The parsed steved status probes of a job, by phase, with the time each was asked for (ms). */
export function probes(builddir: string): Array<{ phase: string; atMs: number; status: StatusDoc }> {
  const t = path.join(builddir, 'temp')
  const lines = fs.existsSync(path.join(t, 'probes')) ? fs.readFileSync(path.join(t, 'probes'), 'utf8').trim().split('\n') : []
  return lines
    .filter((l) => l !== '')
    .map((l) => {
      const [phase, ns] = l.split(' ')
      return { phase, atMs: Number(BigInt(ns) / 1000n) / 1000, status: JSON.parse(fs.readFileSync(path.join(t, `status-${phase}.json`), 'utf8')) as StatusDoc }
    })
}

/** The part of steved's status document the tests read. */
export interface StatusDoc {
  pool: { jobs: number; free: number; held: number; reserved: number; waiting: number }
  holders: Array<{ pid: number; cmdline: string; tokens: number; heldForSeconds: number[] }>
  waiters: Array<{ pid: number; cmdline: string; how: string; reason: string }>
  groups: Array<{ name: string; limit: number | null; roots: number[]; members: number[]; tokens: number }>
  counters: { granted: number; returned: number; reclaimed: number }
}

/** The holder of package CATEGORY/PF in a status document (its command line names the package). */
export function holdersOf(st: StatusDoc, pkg: string): StatusDoc['holders'] {
  return st.holders.filter((h) => h.cmdline.includes(' holder ') && h.cmdline.includes(`--pkg ${pkg} `))
}

export function buildLog(builddir: string): string {
  const f = path.join(builddir, 'temp', 'build.log')
  return fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : ''
}

export function holderLog(builddir: string): string {
  const f = path.join(builddir, 'temp', 'steved-jobserver.log')
  return fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : ''
}

/** `stevectl status --json` against the test's steved. */
export async function stevedStatus(steved: RunningSteved): Promise<StatusDoc> {
  const r = await run(process.execPath, [STEVECTL, '--device', steved.path, 'status', '--json'], { timeoutMs: 30_000 })
  if (r.code !== 0) throw new Error(`stevectl status failed (${r.code}): ${r.stderr}`)
  return JSON.parse(r.stdout) as StatusDoc
}

/** Poll steved's status until `pred` holds (deadlock guard: fails after `ms`). */
export async function waitForStatus(steved: RunningSteved, pred: (s: StatusDoc) => boolean, what: string, ms = 60_000): Promise<StatusDoc> {
  const until = Date.now() + ms
  let s = await stevedStatus(steved)
  while (!pred(s)) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; last status: ${JSON.stringify(s)}`)
    await sleep(100)
    s = await stevedStatus(steved)
  }
  return s
}
