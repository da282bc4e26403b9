// A test bed of real Portage (from PyPI, in .venv-portage-VERSION made by scripts/setup.sh):
// emerge runs as root in a private prefix (PORTAGE_OVERRIDE_EPREFIX) with a local repository
// of tiny EAPI 8 packages, a minimal profile, and the make.conf of the README's Gentoo section
// (the seeds' make.conf with this test's steved) plus what the bed needs: sandboxes off (the
// tests look into the builds from outside), noclean (the logs stay), no delays.
//
// Each package's src_compile runs `emake` on a Makefile of recipes (writeRecipe) that record
// "start NAME NS" / "end NAME NS" in the bed's jobs.log; pkg_setup and src_install record the
// package job as "job-PF" (inside the time the job holds its token). With probe: true every
// build phase saves `stevectl status --json` to ${T}/status-PHASE.json.
//
// Every process of the bed carries STEVED_EMERGE_TEST=<tag> in its environment (Portage passes
// the caller's environment to the phases, and the holder inherits it) and is SIGKILLed at
// teardown by processTag.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { start, type Done, type Started } from '../../../../test/helpers/proc'
import { ROOT, type RunningSteved } from '../../../../test/helpers/steved'
import type { Teardown } from '../../../../test/helpers/common'
import { throwAwayUser } from '../../../../test/helpers/users'
import { HELPER_BIN, MAKE44, STEVECTL, sleep, taggedPids, writeUserBashrc, type StatusDoc } from './emerge'

/** The Portage versions the tests run: the last without native jobserver-token, and one with it. */
export const PORTAGE_VERSIONS = ['3.0.73', '3.0.83'] as const
export type PortageVersion = (typeof PORTAGE_VERSIONS)[number]

/** The venv of Portage `version`; fails loudly when scripts/setup.sh has not made it. */
export function portageVenv(version: string): string {
  const venv = path.join(ROOT, `.venv-portage-${version}`)
  for (const f of ['bin/emerge', 'bin/ebuild', 'share/portage/config/make.globals']) {
    if (!fs.existsSync(path.join(venv, f))) {
      throw new Error(`${venv}/${f} is missing: run scripts/setup.sh (it installs scripts/requirements-portage-${version}.txt)`)
    }
  }
  return venv
}

/** Portage's bin/ directory in the venv (ebuild.sh, misc-functions.sh, ebuild-helpers/emake). */
export function portageBin(version: string): string {
  const bin = path.join(portageVenv(version), 'lib', 'portage', 'bin')
  if (!fs.existsSync(path.join(bin, 'ebuild.sh'))) throw new Error(`no ebuild.sh in ${bin}`)
  return bin
}

/**
 * A venv on the system's Python that runs the same Portage as portageVenv(version), for
 * FEATURES=userpriv: the phases run as the portage user, and the venvs' python3 links to an
 * interpreter under /root (pyenv), which other users cannot reach. This one's python3 is
 * /usr/bin/python3; a .pth file puts the Portage venv's site-packages on its path, and
 * lib/portage (Portage's bin/, found from sys.prefix) links to the Portage venv's.
 */
export function userVenv(version: string, dir: string): string {
  const venv = portageVenv(version)
  const site = fs.readdirSync(path.join(venv, 'lib')).find((d) => /^python3\.\d+$/.test(d))
  if (!site) throw new Error(`no lib/python3.N in ${venv}`)
  const uv = path.join(dir, `venv-userpriv-${version}`)
  const r = spawnSync('/usr/bin/python3', ['-m', 'venv', '--without-pip', uv], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`/usr/bin/python3 -m venv ${uv}: ${r.stderr}`)
  const usite = fs.readdirSync(path.join(uv, 'lib')).find((d) => /^python3\.\d+$/.test(d))!
  fs.writeFileSync(path.join(uv, 'lib', usite, 'site-packages', 'portage-venv.pth'), `${path.join(venv, 'lib', site, 'site-packages')}\n`)
  fs.symlinkSync(path.join(venv, 'lib', 'portage'), path.join(uv, 'lib', 'portage'))
  return uv
}

/**
 * For FEATURES=userpriv: a throw-away user and group standing in for portage:portage
 * (test/helpers/users.ts), and the recipe logs `logs` made writable for it. At teardown the
 * test's processes (`tag`) are killed first, so that userdel finds none of the user's left.
 */
export function throwAwayPortage(t: Teardown, tag: string, logs: string[]): { user: string; group: string; uid: number } {
  const name = `stvp${process.pid % 100000}${Math.random().toString(36).slice(2, 6)}`
  const u = throwAwayUser(t, name, {
    group: true,
    beforeRemove: async () => {
      for (let i = 0; i < 50 && taggedPids(tag).length > 0; i++) {
        for (const pid of taggedPids(tag)) {
          try {
            process.kill(pid, 'SIGKILL')
          } catch {
            // already gone
          }
        }
        await sleep(100)
      }
    },
  })
  for (const f of logs) {
    fs.writeFileSync(f, '')
    fs.chmodSync(f, 0o666)
  }
  return { user: name, group: name, uid: u.uid }
}

export interface PackageSpec {
  /** Package name (category app-misc, version 1). */
  name: string
  /** The Makefile src_compile runs (emake, no -j: MAKEFLAGS carries the jobserver). */
  makefile: string
  /** package.env variables of this package (JOBSERVER_MAX_JOBS, ...). */
  env?: Record<string, string>
}

export interface BedOptions {
  version: PortageVersion
  /** The jobserver: a running steved, or a FIFO path. */
  jobserver: RunningSteved | { path: string }
  dir: string
  tag: string
  packages: PackageSpec[]
  /** Install the bashrc lines of the README (the shim); default true. */
  shim?: boolean
  /** Add FEATURES=jobserver-token (native Portage takes the job tokens itself). */
  featuresToken?: boolean
  /** Probe steved's status in every build phase. */
  probe?: boolean
  /** Override the seeds' MAKEFLAGS line (e.g. a pipe jobserver). */
  makeflags?: string
  /** More make.conf lines. */
  makeConf?: string[]
  /**
   * FEATURES=userpriv: src_unpack … src_install run as this user and group (PORTAGE_USERNAME,
   * PORTAGE_GRPNAME), setup and the merge as root. The test makes them, and makes what the
   * builds write (logs, barriers) writable for them. Default: no userpriv, all phases as root.
   */
  userpriv?: { user: string; group: string }
}

export interface Bed {
  prefix: string
  /** The recipes' and jobs' start/end log. */
  jobsLog: string
  makeConf: string
  /** Start emerge with these arguments (packages as app-misc/NAME), and more environment. */
  emerge(t: Teardown, args: string[], env?: Record<string, string>): Started
  builddir(name: string): string
  buildLog(name: string): string
  holderLog(name: string): string
  /** The parsed status probes of a package, in phase order. */
  probes(name: string): Array<{ phase: string; atMs: number; status: StatusDoc }>
  /** Whether app-misc/NAME-1 got merged. */
  installed(name: string): boolean
  /** MAKEOPTS as the package's src_compile saw it. */
  makeopts(name: string): string
}

/** The make.conf of the README's Gentoo section (the seeds'), for the jobserver at `jsPath`. */
export function seedsMakeConf(jsPath: string): string {
  return `MAKEOPTS="-j32 -l32"\nNINJAOPTS="-l32"\nMAKEFLAGS="-l32 --jobserver-auth=fifo:${jsPath}"\n`
}

const EBUILD = `# Written by the emerge-shim tests (packages/emerge-shim/test/helpers/portage.ts).
EAPI=8
DESCRIPTION="emerge-shim test package"
HOMEPAGE="https://example.org/steved"
LICENSE="MIT"
SLOT="0"
KEYWORDS="amd64"
S=\${WORKDIR}

steved_test_probe() {
	[[ -n \${STEVED_TEST_PROBE-} ]] || return 0
	local at
	at=$(date +%s%N)
	"\${STEVED_TEST_NODE}" "\${STEVED_TEST_STEVECTL}" --device "\${STEVED_TEST_JOBSERVER}" status --json > "\${T}/status-\${EBUILD_PHASE}.json" || die "status probe failed"
	echo "\${EBUILD_PHASE} \${at}" >> "\${T}/probes"
}
pkg_setup() {
	echo "start job-\${PF} $(date +%s%N)" >> "\${STEVED_TEST_JOBLOG}"
	steved_test_probe
}
src_unpack() {
	cp "\${FILESDIR}/Makefile" "\${S}/" || die
	steved_test_probe
}
src_prepare() { default; steved_test_probe; }
src_configure() { steved_test_probe; }
src_compile() {
	steved_test_probe
	# What an ebuild that reads N from MAKEOPTS (epytest's EPYTEST_JOBS fallback) sees.
	echo "\${MAKEOPTS}" > "\${T}/makeopts"
	emake
}
src_test() { steved_test_probe; }
src_install() {
	steved_test_probe
	echo "end job-\${PF} $(date +%s%N)" >> "\${STEVED_TEST_JOBLOG}"
}
`

/** Write the prefix: profile, repository, make.conf, bashrc, package.env. */
export function makeBed(o: BedOptions): Bed {
  const venv = portageVenv(o.version)
  // What runs emerge: the Portage venv, or under userpriv one the portage user can run too.
  const runVenv = o.userpriv ? userVenv(o.version, o.dir) : venv
  const prefix = path.join(o.dir, `prefix-${o.version}`)
  const etc = path.join(prefix, 'etc', 'portage')
  const repo = path.join(prefix, 'var', 'db', 'repos', 'gentoo')
  const profile = path.join(repo, 'profiles', 'default')
  const tmpdir = path.join(prefix, 'var', 'tmp')
  for (const d of [etc, path.join(etc, 'repos.conf'), path.join(etc, 'env'), profile, path.join(repo, 'metadata'), tmpdir, path.join(prefix, 'share'), path.join(prefix, 'bin')]) {
    fs.mkdirSync(d, { recursive: true })
  }
  // Portage reads make.globals & co. from EPREFIX/share/portage (KeyError PKGDIR without it).
  fs.symlinkSync(path.join(venv, 'share', 'portage'), path.join(prefix, 'share', 'portage'))
  // emake runs `make`: the phases' PATH ends with the caller's, where GNU make 4.4 comes first
  // (Debian's 4.3 does not understand fifo: jobservers).
  fs.symlinkSync(MAKE44, path.join(prefix, 'bin', 'make'))

  fs.writeFileSync(path.join(repo, 'profiles', 'repo_name'), 'gentoo\n')
  fs.writeFileSync(path.join(repo, 'profiles', 'categories'), 'app-misc\n')
  fs.writeFileSync(path.join(repo, 'profiles', 'arch.list'), 'amd64\n')
  fs.writeFileSync(path.join(repo, 'metadata', 'layout.conf'), 'masters =\nthin-manifests = true\nprofile-formats = portage-2\n')
  fs.writeFileSync(path.join(profile, 'eapi'), '8\n')
  fs.writeFileSync(path.join(profile, 'make.defaults'), 'ARCH="amd64"\nACCEPT_KEYWORDS="amd64"\nELIBC="glibc"\nKERNEL="linux"\n')
  fs.symlinkSync(profile, path.join(etc, 'make.profile'))
  fs.writeFileSync(path.join(etc, 'repos.conf', 'gentoo.conf'), `[DEFAULT]\nmain-repo = gentoo\n\n[gentoo]\nlocation = ${repo}\n`)

  const packageEnv: string[] = []
  for (const p of o.packages) {
    const dir = path.join(repo, 'app-misc', p.name)
    fs.mkdirSync(path.join(dir, 'files'), { recursive: true })
    fs.writeFileSync(path.join(dir, `${p.name}-1.ebuild`), EBUILD)
    fs.writeFileSync(path.join(dir, 'files', 'Makefile'), p.makefile)
    if (p.env) {
      const file = `${p.name}.conf`
      fs.writeFileSync(path.join(etc, 'env', file), Object.entries(p.env).map(([k, v]) => `${k}="${v}"\n`).join(''))
      packageEnv.push(`app-misc/${p.name} ${file}`)
    }
  }
  fs.writeFileSync(path.join(etc, 'package.env'), packageEnv.map((l) => `${l}\n`).join(''))

  const jsPath = o.jobserver.path
  const jobsLog = path.join(o.dir, 'jobs.log')
  let makeConf = `# The seeds' make.conf (README.md, Gentoo section):\n${seedsMakeConf(jsPath)}`
  if (o.makeflags !== undefined) makeConf = makeConf.replace(/^MAKEFLAGS=.*$/m, `MAKEFLAGS="${o.makeflags}"`)
  if (o.featuresToken) makeConf += 'FEATURES="${FEATURES} jobserver-token"\n'
  makeConf +=
    `# The test bed: no sandboxes (the tests watch the builds from outside), keep the build\n` +
    `# directories (their logs), no delays.\n` +
    `FEATURES="\${FEATURES} -sandbox -usersandbox -ipc-sandbox -network-sandbox -pid-sandbox ${o.userpriv ? 'userpriv' : '-userpriv'} -userfetch -usersync -news -merge-sync noclean"\n` +
    `PORTAGE_TMPDIR="${tmpdir}"\nCLEAN_DELAY="0"\nEMERGE_WARNING_DELAY="0"\n` +
    `STEVED_JOBSERVER_HELPER="${HELPER_BIN}"\n` +
    `STEVED_TEST_JOBLOG="${jobsLog}"\nSTEVED_TEST_NODE="${process.execPath}"\nSTEVED_TEST_STEVECTL="${STEVECTL}"\nSTEVED_TEST_JOBSERVER="${jsPath}"\n` +
    (o.probe ? 'STEVED_TEST_PROBE="1"\n' : '') +
    (o.makeConf ?? []).map((l) => `${l}\n`).join('')
  fs.writeFileSync(path.join(etc, 'make.conf'), makeConf)
  if (o.shim ?? true) fs.renameSync(writeUserBashrc(o.dir), path.join(etc, 'bashrc'))

  const builddir = (name: string) => path.join(tmpdir, 'portage', 'app-misc', `${name}-1`)
  const read = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '')
  return {
    prefix,
    jobsLog,
    makeConf,
    emerge(t, args, more = {}) {
      // Nothing of the caller's jobserver: native Portage would take MAKEFLAGS in its own
      // environment as "started under a jobserver client" and use an implicit slot.
      const env: Record<string, string> = {
        PATH: `${path.join(prefix, 'bin')}:${path.join(runVenv, 'bin')}:/usr/sbin:/usr/bin:/sbin:/bin`,
        LANG: 'C.UTF-8',
        HOME: '/root',
        TERM: 'dumb',
        PORTAGE_OVERRIDE_EPREFIX: prefix,
        // No portage user here unless the test made one for userpriv; otherwise the builds
        // run as root (FEATURES=-userpriv).
        PORTAGE_USERNAME: o.userpriv?.user ?? 'root',
        PORTAGE_GRPNAME: o.userpriv?.group ?? 'root',
        STEVED_EMERGE_TEST: o.tag,
        ...more,
      }
      const opts = ['--oneshot', '--color=n', '--nospinner', ...args]
      if (o.userpriv) return start(t, path.join(runVenv, 'bin', 'python3'), [path.join(runVenv, 'lib', 'portage', 'bin', 'emerge'), ...opts], { env, detached: true })
      return start(t, path.join(venv, 'bin', 'emerge'), opts, { env, detached: true })
    },
    builddir,
    buildLog: (name) => read(path.join(builddir(name), 'temp', 'build.log')),
    holderLog: (name) => read(path.join(builddir(name), 'temp', 'steved-jobserver.log')),
    probes(name) {
      const t = path.join(builddir(name), 'temp')
      return read(path.join(t, 'probes'))
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => {
          const [phase, ns] = l.split(' ')
          return { phase, atMs: Number(BigInt(ns) / 1000n) / 1000, status: JSON.parse(read(path.join(t, `status-${phase}.json`))) as StatusDoc }
        })
    },
    makeopts: (name) => read(path.join(builddir(name), 'temp', 'makeopts')).trim(),
    installed: (name) => fs.existsSync(path.join(prefix, 'var', 'db', 'pkg', 'app-misc', `${name}-1`)),
  }
}

/**
 * Wait for emerge to exit; a deadlock guard, not a measurement. Once seen here (1 run in ~50):
 * Portage 3.0.83 under heavy load waited for its lock-helper.py, which waited for emerge. After
 * `ms` the emerge's process group is killed and the test fails saying so.
 */
export async function finished(emerge: Started, ms = 600_000): Promise<Done> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      try {
        process.kill(-emerge.pid, 'SIGKILL')
      } catch {
        // already gone
      }
      reject(new Error(`emerge (pid ${emerge.pid}) did not finish within ${ms / 1000} s; output: ${emerge.output().slice(-2000)}`))
    }, ms)
  })
  try {
    return await Promise.race([emerge.exited, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** ewarn's marker in a build log: Portage's yellow star (einfo's is green). */
export const EWARN = '\x1b[33;01m*\x1b[0m'

/** The texts of the ewarn lines of a build log. */
export function ewarns(log: string): string[] {
  return log
    .split('\n')
    .filter((l) => l.startsWith(` ${EWARN} `))
    .map((l) => l.slice(EWARN.length + 2))
}
