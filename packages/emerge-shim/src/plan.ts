// What the shim does in one ebuild.sh or misc-functions.sh process, decided from the
// environment Portage gives it. Pure functions, table-tested in test/plan.test.ts.
//
// How Portage runs a package job (bin/ebuild.sh, bin/phase-functions.sh, bin/misc-functions.sh,
// lib/_emerge/EbuildPhase.py, MiscFunctionsProcess.py, read at gentoo/portage a20ef27a):
//   - every phase is a new `bash ebuild.sh PHASE` process: setup, unpack, prepare, configure,
//     compile, test, install (pretend, clean, preinst, postinst, ... are not the build);
//   - /etc/portage/bashrc is sourced in every phase (PORTAGE_BASHRCS_SOURCED is not saved with
//     the environment), in ebuild.sh itself or in the subshell that runs the phase; $$ is the
//     ebuild.sh process either way;
//   - after install, `misc-functions.sh install_qa_check install_symlink_html_docs
//     install_hooks` runs with EBUILD_PHASE unset and sources the bashrc too: the build's last
//     step, after which native Portage gives the token back. MISC_FUNCTIONS_ARGS holds those
//     words there, but as a shell variable, not exported: the bash module sees it and runs
//     `built` (checked with real Portage 3.0.73 and 3.0.83); this process would see it only
//     if someone exported it, so contextOf's 'post-install' is for that case alone;
//   - when a phase fails for any reason (die, a signal, a non-zero exit) Portage runs
//     `misc-functions.sh die_hooks`, which runs EBUILD_DEATH_HOOKS unless die() already ran
//     them in the failing phase.

/** The environment as Portage passes it. */
export type Env = Readonly<Record<string, string | undefined>>

/** The phases during which a package job holds its token, in Portage's order. */
export const BUILD_PHASES = ['setup', 'unpack', 'prepare', 'configure', 'compile', 'test', 'install'] as const
export type BuildPhase = (typeof BUILD_PHASES)[number]

/** Where this process is in a package job. */
export type Context =
  /** ebuild.sh running a build phase. */
  | { kind: 'build'; phase: BuildPhase }
  /** misc-functions.sh running the post-install QA checks: the build's last step. */
  | { kind: 'post-install' }
  /** misc-functions.sh running die hooks: a phase failed. */
  | { kind: 'die-hooks' }
  /** Anything else (depend, pretend, clean, preinst, postinst, ...): the shim does nothing. */
  | { kind: 'ignored' }

const words = (s: string | undefined): string[] => (s ?? '').split(/\s+/).filter((w) => w !== '')

export function contextOf(env: Env): Context {
  const phase = env.EBUILD_PHASE ?? ''
  const misc = words(env.MISC_FUNCTIONS_ARGS)
  if (phase === '' && misc.length > 0) {
    if (misc.includes('install_qa_check')) return { kind: 'post-install' }
    if (misc.includes('die_hooks')) return { kind: 'die-hooks' }
    return { kind: 'ignored' }
  }
  if (misc.length === 0 && (BUILD_PHASES as readonly string[]).includes(phase)) return { kind: 'build', phase: phase as BuildPhase }
  return { kind: 'ignored' }
}

/** The user's settings: FEATURES and the package.env variables. */
export interface Settings {
  /** FEATURES contains jobserver-token. */
  featuresToken: boolean
  /** JOBSERVER_TOKENS: tokens the job holds for its whole duration (null: not set). */
  tokens: number | null
  /** JOBSERVER_MAX_JOBS: jobs this build's processes may run at once (null: not set). */
  maxJobs: number | null
  /** Settings that were ignored, with why. */
  problems: string[]
}

function wholeNumber(env: Env, name: string, problems: string[]): number | null {
  const v = env[name]
  if (v === undefined || v.trim() === '') return null
  if (!/^\s*[1-9]\d{0,5}\s*$/.test(v)) {
    problems.push(`${name}='${v}' is ignored: it must be a whole number >= 1`)
    return null
  }
  return Number(v)
}

export function parseSettings(env: Env): Settings {
  const problems: string[] = []
  return {
    featuresToken: words(env.FEATURES).includes('jobserver-token') && !words(env.FEATURES).includes('-jobserver-token'),
    tokens: wholeNumber(env, 'JOBSERVER_TOKENS', problems),
    maxJobs: wholeNumber(env, 'JOBSERVER_MAX_JOBS', problems),
    problems,
  }
}

/** Portage 3.0.74 took its first token itself (FEATURES=jobserver-token, bug 966879). */
export const NATIVE_SINCE: readonly number[] = [3, 0, 74]

/** The leading dotted numbers of a version: "3.0.82.dev5+gabc" and "3.0.82-r1" give [3, 0, 82]. */
export function parseVersion(s: string): number[] | null {
  const m = /^\s*(\d+(?:\.\d+)*)/.exec(s)
  return m ? m[1].split('.').map(Number) : null
}

export function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0)
    if (d !== 0) return d < 0 ? -1 : 1
  }
  return 0
}

/** What is known about the running Portage. */
export interface PortageInfo {
  /** Its version, when known. */
  version: string | null
  /** It takes a jobserver token per job itself when FEATURES=jobserver-token is set. */
  native: boolean
  /** How that was found out, for the message. */
  how: string
}

/**
 * Find out whether Portage takes the job token itself. Portage exports no version variable to
 * ebuild phases, so in order:
 *   1. PORTAGE_VERSION, when the user (or a test) sets it;
 *   2. the VERSION literal of ${PORTAGE_PYM_PATH}/portage/__init__.py (installed Portage;
 *      a git checkout computes it at run time and has no literal);
 *   3. the feature itself: _emerge/Scheduler.py mentions "jobserver-token".
 * `readFile` returns a file's text or null.
 */
export function detectPortage(env: Env, readFile: (path: string) => string | null): PortageInfo {
  const fromVersion = (version: string, how: string): PortageInfo | null => {
    const v = parseVersion(version)
    return v ? { version, native: compareVersions(v, NATIVE_SINCE) >= 0, how } : null
  }
  if (env.PORTAGE_VERSION) {
    const r = fromVersion(env.PORTAGE_VERSION.trim(), 'PORTAGE_VERSION')
    if (r) return r
  }
  const pym = env.PORTAGE_PYM_PATH
  if (pym) {
    // The wheels on PyPI assign VERSION = "HEAD" in the git branch first, then the release.
    const init = readFile(`${pym}/portage/__init__.py`) ?? ''
    for (const m of init.matchAll(/^\s*VERSION\s*=\s*["']([^"'@]+)["']/gm)) {
      const r = fromVersion(m[1], `${pym}/portage/__init__.py`)
      if (r) return r
    }
    const scheduler = readFile(`${pym}/_emerge/Scheduler.py`)
    if (scheduler !== null) {
      return { version: null, native: scheduler.includes('"jobserver-token"'), how: `${pym}/_emerge/Scheduler.py` }
    }
  }
  return { version: null, native: false, how: 'unknown' }
}

/** A message said once per job (in its first phase). */
export interface Note {
  level: 'info' | 'warn'
  text: string
}

/** What the shim does for this job. */
export interface Plan {
  /** Tokens the job holds in all, Portage's included (0: the shim holds none). */
  jobTokens: number
  /** Of those, held by emerge itself (native FEATURES=jobserver-token). */
  portageTokens: number
  /** Of those, held by the shim's holder process. */
  holderTokens: number
  /** steved group name of the build's processes. */
  groupName: string
  /** Token cap of that group, or null: no cap. */
  groupLimit: number | null
  notes: Note[]
}

function portageName(p: PortageInfo): string {
  return p.version ? `Portage ${p.version}` : 'this Portage'
}

/**
 * The plan for package `pkg` (CATEGORY/PF).
 *
 * The group cap. make (or ninja, cargo) at the top of the build runs one job on its implicit
 * slot and one more per token it reads; the holder is a member of the group too (it joins as
 * one of the group's roots), so its tokens count against the cap. With a cap of L tokens the
 * build runs at most 1 + (L - holderTokens) jobs; for JOBSERVER_MAX_JOBS=M that is
 *     L = M - 1 + holderTokens.
 * steved's limits start at 1, so M = 1 with no holder token in the group (Portage holds the
 * job's token, or nobody does) cannot be expressed: say so.
 */
export function makePlan(settings: Settings, portage: PortageInfo, pkg: string): Plan {
  const notes: Note[] = settings.problems.map((text) => ({ level: 'warn' as const, text }))
  // Enabling the bash module asks for a token per job; JOBSERVER_TOKENS asks for more.
  const jobTokens = settings.tokens ?? 1
  const portageTokens = settings.featuresToken && portage.native ? 1 : 0
  const holderTokens = Math.max(0, jobTokens - portageTokens)
  if (portageTokens > 0) {
    const more = holderTokens > 0 ? `; JOBSERVER_TOKENS=${jobTokens}: the shim holds the other ${holderTokens}` : ''
    notes.push({
      level: 'info',
      text: `${portageName(portage)} implements FEATURES=jobserver-token itself (found from ${portage.how}): emerge holds this job's token, the shim takes no second one${more}`,
    })
  }
  let groupLimit: number | null = null
  if (settings.maxJobs !== null) {
    groupLimit = settings.maxJobs - 1 + holderTokens
    if (groupLimit < 1) {
      groupLimit = 1
      notes.push({
        level: 'warn',
        text:
          `JOBSERVER_MAX_JOBS=1 cannot be enforced exactly: the job's token is not held inside the build's group ` +
          `(${portageTokens > 0 ? 'emerge holds it' : 'no job token is held'}) and steved's group limits start at 1, so this build may run 2 jobs at once`,
      })
    }
  }
  return { jobTokens, portageTokens, holderTokens, groupName: pkg, groupLimit, notes }
}
