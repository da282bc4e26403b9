// Every command in README.md, packages/*/README.md and ebuilds/README.md runs as written after
// set-up (issue 17). The READMEs are read when the test runs: the fenced sh, bash and console
// blocks are cut into commands (a line, or a whole block when it holds a compound command), and
// each command must have an entry in TABLE below, which says how it is run or why it is not.
// A command without an entry fails the test, and so does an entry that no README has any more,
// so a new README command cannot slip by and the table cannot rot.
//
// How commands run: in bash, after the README's own PATH line (run as written in the checkout),
// in a fresh temporary directory unless the entry says `cwd: 'root'`, with STEVED_DEVICE and
// MAKEFLAGS naming a test steved on a FUSE file (stevectl, jobclient and pytest find it the
// way they find /run/steved/jobserver). A command that names the system path
// (/run/steved/jobserver, /dev/steve) or a placeholder runs with the substitutions its entry
// lists, each of which must match. Needs root and /dev/fuse.

import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { run } from './helpers/proc'
import { ROOT, isMounted, startSteved, tmpDir } from './helpers/steved'

const READMES = ['README.md', ...fs.readdirSync(path.join(ROOT, 'packages')).map((p) => `packages/${p}/README.md`), 'ebuilds/README.md'].filter(
  (f) => fs.existsSync(path.join(ROOT, f)),
)

interface Command {
  file: string
  line: number
  /** The command with trailing comments cut, lines joined by \n; the key into TABLE. */
  key: string
  /** The text as written (comments included). */
  text: string
}

/** The commands of one README: fenced sh/bash/console blocks, cut into commands. */
export function commandsOf(file: string, markdown: string): Command[] {
  const out: Command[] = []
  const lines = markdown.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(sh|bash|console)\s*$/.exec(lines[i])
    if (!open) continue
    let j = i + 1
    while (j < lines.length && !/^\s*```\s*$/.test(lines[j])) j++
    let body = lines.slice(i + 1, j).map((l) => l.slice(Math.min(open[1].length, l.length - l.trimStart().length)))
    if (open[2] === 'console') body = body.filter((l) => /^[$#] /.test(l)).map((l) => l.slice(2))
    const compound = body.some((l) => /^\s*(if|for|while|until|case|coproc)\b|\\$|\{\s*$/.test(l))
    const units = compound ? [{ at: 0, text: body.join('\n') }] : body.map((l, k) => ({ at: k, text: l })).filter((u) => u.text.trim() !== '')
    for (const u of units) {
      const key = u.text
        .split('\n')
        .map((l) => stripComment(l).trimEnd())
        .filter((l) => l.trim() !== '')
        .join('\n')
      if (key !== '') out.push({ file, line: i + 2 + u.at, key, text: u.text })
    }
    i = j
  }
  return out
}

/** A line without its trailing `# comment` (a # outside quotes, after whitespace). */
function stripComment(line: string): string {
  let quote: string | null = null
  for (let k = 0; k < line.length; k++) {
    const c = line[k]
    if (quote) {
      if (c === quote) quote = null
    } else if (c === '"' || c === "'") quote = c
    else if (c === '#' && (k === 0 || /\s/.test(line[k - 1]))) return line.slice(0, k)
  }
  return line
}

type Entry =
  | { skip: string }
  | {
      /** What the run checks, in a few words. */
      run: string
      cwd?: 'root' | 'tmp'
      /** [as written, as run]: $JOBSERVER is the test steved's file, $TMP the command's directory. */
      subst?: [string, string][]
      /** bash run first in the same directory: fixtures the command needs. */
      setup?: string
      /** A daemon: wait for this on stdout, then SIGTERM it and expect exit 0. */
      daemon?: RegExp
      /** An interactive view: wait for this on stdout, then SIGINT it and expect exit 0. */
      interactive?: RegExp
      timeoutMs?: number
    }

const MAKECONF = 'make.conf content, not a command: test/helpers/portage.ts writes these lines into the make.conf real Portage (3.0.73, 3.0.83) runs with in the emerge-shim tests'
const BASHRC = "/etc/portage/bashrc content, not a command: the emerge-shim tests source it in real Portage's ebuild environment"
const GENTOO = 'emerge on a real Gentoo system (this CI is Debian); the overlay is checked by test/ebuilds/run-suite.sh (pkgcheck, real Portage from PyPI)'

/** Every README command, by its text without comments. Reviewed: each substitution is explicit. */
const TABLE: Record<string, Entry> = {
  // README.md: the two set-up commands and the PATH line.
  'bash scripts/demo.sh': { skip: 'set-up command: this test runs after set-up (scripts/test.sh runs scripts/setup.sh first); the demo is a 1-2 minute show of the same steved, make and cargo the tests run' },
  'bash scripts/test.sh': { skip: 'set-up command: the suite this test is part of (it would run itself)' },
  'export PATH="$PWD/node_modules/.bin:$PWD/.venv/bin:$PATH"': { run: 'run before every command, in the checkout (see preamble())', cwd: 'root' },
  'steved -j 32': {
    run: 'starts, prints its MAKEFLAGS line, stops on SIGTERM',
    subst: [['steved -j 32', 'steved -j 32 --path $TMP/jobserver']],
    daemon: /^MAKEFLAGS=--jobserver-auth=fifo:/m,
  },
  'steved --transport fuse --path /run/steved/jobserver -j 32 -l 40 -a 2048': {
    run: 'starts, prints its MAKEFLAGS line, stops on SIGTERM',
    subst: [['/run/steved/jobserver', '$TMP/jobserver']],
    daemon: /^MAKEFLAGS=--jobserver-auth=fifo:/m,
  },
  'stevectl --get-tokens --get-jobs': { run: 'exit 0' },
  'stevectl --set-jobs 6': { run: 'exit 0' },
  'stevectl status': { run: 'exit 0' },
  'stevectl status --json': { run: 'exit 0' },
  'stevectl top': { run: 'draws a frame, quits on SIGINT', interactive: /PID +TOK +WAIT/ },
  'stevectl metrics --textfile F.prom': { run: 'exit 0, F.prom written' },
  'stevectl make -C src': { run: 'exit 0: make runs holding a token', setup: "mkdir -p src && printf 'all:\\n\\t@echo built\\n' > src/Makefile" },
  'emerge --ask dev-build/steved': { skip: GENTOO },
  'MAKEOPTS="-j32 -l32"': { skip: MAKECONF },
  'NINJAOPTS="-l32"': { skip: MAKECONF },
  'MAKEFLAGS="-l32 --jobserver-auth=fifo:/dev/steve"': { skip: MAKECONF },
  'if [[ -r /usr/share/steved/steved-jobserver.bashrc ]]; then\n\tsource /usr/share/steved/steved-jobserver.bashrc\n\tsteved_jobserver_hook\nfi': { skip: BASHRC },
  'npm run bench': { skip: 'the full benchmark: 4-5 minutes on 2 CPUs; test/bench-outputs.test.ts runs bench/run.sh report and --quick report' },
  'npm run bench -- --quick': { skip: 'a benchmark run (minutes); test/bench-outputs.test.ts runs bench/run.sh --quick report' },
  'npm run bench -- scheduling report': { skip: 'a benchmark section (minutes); test/bench-outputs.test.ts checks that partial runs leave tracked files alone' },

  // packages/jobclient/README.md
  'npm install ./jobclient-0.1.0.tgz': {
    run: 'exit 0, from the tarball npm pack makes',
    // npm pack of a copy of packages/jobclient (packing rebuilds, and the checkout's build/ and
    // dist/ are other work's). The copy sees the checkout's modules through a directory of
    // links of its own, never the checkout's node_modules itself, which npm must not touch.
    setup:
      'stage="$TMP/stage"; mkdir -p "$stage/packages" "$stage/node_modules/.bin"; cp "$ROOT/tsconfig.base.json" "$stage/"; ' +
      'for m in "$ROOT"/node_modules/*; do case "${m##*/}" in jobclient|steved|emerge-shim) ;; *) ln -s "$m" "$stage/node_modules/"; esac; done; ' +
      'for b in "$ROOT"/node_modules/.bin/*; do ln -sfn "$(readlink -f "$b")" "$stage/node_modules/.bin/${b##*/}"; done; ' +
      'cp -a "$ROOT/packages/jobclient" "$stage/packages/"; rm -rf "$stage/packages/jobclient/"{node_modules,build,prebuilds} "$stage/packages/jobclient/"*.tgz; ' +
      '(cd "$stage/packages/jobclient" && env -u MAKEFLAGS npm pack --pack-destination "$TMP" --loglevel=error >/dev/null); rm -rf "$stage"',
    timeoutMs: 300000,
  },
  'NINJA=jobclient-ninja meson compile -C build': {
    run: 'exit 0, a meson project built through jobclient-ninja on the test steved',
    setup: "printf \"project('r', 'c')\\nexecutable('r', 'r.c')\\n\" > meson.build && printf 'int main(void) { return 0; }\\n' > r.c && NINJA=jobclient-ninja meson setup build >/dev/null",
    timeoutMs: 180000,
  },
  'cmake -G Ninja -DCMAKE_MAKE_PROGRAM="$(command -v jobclient-ninja)" -S . -B build': {
    run: 'exit 0, a CMake project configured for jobclient-ninja',
    setup: "printf 'cmake_minimum_required(VERSION 3.20)\\nproject(r C)\\nadd_executable(r r.c)\\n' > CMakeLists.txt && printf 'int main(void) { return 0; }\\n' > r.c",
    timeoutMs: 180000,
  },
  'coproc JC { jobclient agent; }\nread -r ready version <&"${JC[0]}"\necho acquire >&"${JC[1]}"; read -r status id <&"${JC[0]}"\ndo_the_work\necho "release $id" >&"${JC[1]}"; read -r status <&"${JC[0]}"\nexec {JC[1]}>&-; wait "$JC_PID"': {
    run: 'exit 0 under set -e, with a token acquired and released; do_the_work is the reader\'s own work',
    subst: [['do_the_work', 'do_the_work() { echo "working, token $id"; }; do_the_work']],
  },

  // packages/pytest-bridge/README.md
  'MAKEFLAGS=--jobserver-auth=fifo:/run/steved/jobserver pytest -n 8 -p jobserver': {
    run: 'exit 0, tests run on the test steved',
    subst: [['/run/steved/jobserver', '$JOBSERVER']],
    setup: "printf 'def test_a():\\n    pass\\n\\ndef test_b():\\n    pass\\n' > test_readme.py",
    timeoutMs: 180000,
  },
  'pytest -n auto -p jobserver --jobserver=/dev/steve': {
    run: 'exit 0, tests run on the test steved',
    subst: [['/dev/steve', '$JOBSERVER']],
    setup: "printf 'def test_a():\\n    pass\\n' > test_readme.py",
    timeoutMs: 180000,
  },
  'pip install ./packages/pytest-bridge': {
    run: "exit 0 in a fresh venv (the checkout's .venv keeps its editable install)",
    cwd: 'root',
    subst: [['pip install', '"$TMP/venv/bin/pip" install -q']],
    setup: 'python3 -m venv "$TMP/venv"',
    timeoutMs: 300000,
  },
  'pip install -e ./packages/pytest-bridge': {
    run: "exit 0 in a fresh venv (the checkout's .venv keeps its own)",
    cwd: 'root',
    subst: [['pip install', '"$TMP/venv/bin/pip" install -q']],
    setup: 'python3 -m venv "$TMP/venv"',
    timeoutMs: 300000,
  },

  // ebuilds/README.md
  'git clone https://github.com/steved-jobserver/steved.git /var/db/repos/steved-src': { skip: 'network: CI reaches no git host, and the clone goes into the system path /var/db/repos; test/ebuilds/run-suite.sh clones this checkout instead' },
  // (emerge --ask dev-build/steved: listed under README.md above)
  'FEATURES=test ALLOW_TEST=privileged emerge --ask =dev-build/steved-9999': { skip: GENTOO + '; portage-test-restrict.sh checks FEATURES=test with ALLOW_TEST=privileged against real Portage' },
  'npm run release': { skip: "writes the overlay's Manifests in this checkout (files other work edits); test/ebuilds/run-suite.sh runs scripts/release.sh --offline in a clone" },
  'tar -xf steved-V.tar.xz && tar -xf steved-V-node_modules.tar.xz && cd steved-V': { skip: "V is the release's version: the files come from npm run release; the overlay's ebuild (src_unpack) does this, checked by test/ebuilds/run-suite.sh" },
  'scripts/build-addons.sh --nodedir=/usr': { skip: "in the unpacked release (above); the ebuild's src_compile runs it, checked by test/ebuilds/run-suite.sh" },
  'DESTDIR=/tmp/image scripts/install.sh --prefix=/usr --libdir=/usr/lib64': { skip: 'in the unpacked release (above); test/ebuilds/run-suite.sh runs scripts/install.sh into a DESTDIR and checks the layout' },
}

/** The README's own PATH line, run in the checkout before each command. */
function preamble(all: Command[]): string {
  const line = all.find((c) => /^export PATH=/.test(c.key))
  if (!line) throw new Error('README.md has no `export PATH=...` line: the READMEs must say how steved, stevectl and jobclient get on PATH')
  return `cd "$ROOT" && ${line.key} && cd "$TMP"`
}

const all = READMES.flatMap((f) => commandsOf(f, fs.readFileSync(path.join(ROOT, f), 'utf8')))

t.test('every README command is either run or listed with the reason it is not', async (t) => {
  t.ok(all.length > 20, `found ${all.length} commands in ${READMES.join(', ')}`)
  const unlisted = all.filter((c) => !(c.key in TABLE)).map((c) => `${c.file}:${c.line}: ${c.key}`)
  t.same(unlisted, [], 'README commands the table does not know (add them, as run or skipped with a reason)')
  const keys = new Set(all.map((c) => c.key))
  t.same(Object.keys(TABLE).filter((k) => !keys.has(k)), [], 'table entries no README has any more')
  for (const [k, e] of Object.entries(TABLE)) if ('skip' in e) t.ok(e.skip.length > 20, `a reason for skipping ${k}`)
})

t.test('the README commands run as written', async (t) => {
  const head = preamble(all)
  const steved = await startSteved(t, { jobs: 4 })
  const seen = new Set<string>()
  for (const c of all) {
    const e = TABLE[c.key]
    if (!e || 'skip' in e || seen.has(c.key) || /^export PATH=/.test(c.key)) continue
    seen.add(c.key)
    await t.test(`${c.file}:${c.line}: ${c.key.split('\n')[0]}`, async (t) => {
      const dir = tmpDir(t, 'readme-cmd-')
      let cmd = c.text
      for (const [from, to] of e.subst ?? []) {
        t.ok(cmd.includes(from), `substitution '${from}' applies`)
        cmd = cmd.split(from).join(to)
      }
      const env = {
        ...process.env,
        ROOT,
        TMP: dir,
        JOBSERVER: steved.path,
        STEVED_DEVICE: steved.path,
        MAKEFLAGS: ` -j --jobserver-auth=fifo:${steved.path}`,
      }
      delete env.NODE_OPTIONS // tap's hooks are not part of a user's shell
      const cwd = e.cwd === 'root' ? ROOT : dir
      if (e.setup) {
        const s = await run('bash', ['-ec', `${head}\ncd "${cwd}"\n${e.setup}`], { env, timeoutMs: e.timeoutMs ?? 120000 })
        t.equal(s.code, 0, `set-up: ${e.setup}\n${s.stderr}`)
      }
      const script = `set -euo pipefail\n${head}\ncd "${cwd}"\n${cmd}\n`
      if (e.daemon || e.interactive) {
        // exec: the signal below reaches the program itself, not a bash waiting for it.
        const script = `set -euo pipefail\n${head}\ncd "${cwd}"\nexec ${cmd}\n`
        const child = spawn('bash', ['-c', script], { env, stdio: ['ignore', 'pipe', 'pipe'] })
        let out = ''
        let err = ''
        child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
        child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
        const exited = new Promise<number | null>((r) => child.once('close', (code) => r(code)))
        t.teardown(async () => {
          if (child.exitCode === null) {
            child.kill('SIGKILL')
            await exited
          }
          const js = path.join(dir, 'jobserver')
          if (isMounted(js)) await run('umount', ['-l', js])
        })
        const want = (e.daemon ?? e.interactive)!
        const until = Date.now() + 30000
        while (!want.test(out) && child.exitCode === null && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
        t.match(out, want, `output: ${want}`)
        child.kill(e.daemon ? 'SIGTERM' : 'SIGINT')
        const code = await exited
        t.equal(code, 0, `exit 0 after ${e.daemon ? 'SIGTERM' : 'SIGINT'}\n${err}`)
        return
      }
      const r = await run('bash', ['-c', script], { env, timeoutMs: e.timeoutMs ?? 120000 })
      t.equal(r.code, 0, `${e.run}\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-2000)}`)
      // pytest's plugin and jobclient only warn about an unusable jobserver: that is a failure here.
      t.notMatch(r.stdout + r.stderr, /jobserver unavailable|warning: jobserver/i, 'no jobserver warning')
      if (c.key === 'stevectl metrics --textfile F.prom') t.match(fs.readFileSync(path.join(dir, 'F.prom'), 'utf8'), /^steved_up 1$/m)
      if (c.key === 'npm install ./jobclient-0.1.0.tgz') {
        const use = await run(process.execPath, ['-e', "process.stdout.write(typeof require('jobclient').JobClient)"], { cwd: dir })
        t.equal(use.stdout, 'function', 'the installed package loads')
      }
    })
  }
})
