// The bash module on its own (pure logic), with a stand-in helper that records how it is called: sourcing
// it has no side effects, it is a silent no-op when nothing asks for it or the helper is
// missing, it acts only in the build steps, and it turns the helper's lines into einfo/ewarn.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { run } from '../../../test/helpers/proc'
import { tmpDir } from '../../../test/helpers/steved'
import { MODULE } from './helpers/emerge'
import { portageBin, PORTAGE_VERSIONS } from './helpers/portage'

interface Fixture {
  dir: string
  helper: string
  calls: () => string[]
}

/** A helper that records its arguments and prints $FAKE_OUT (default nothing), exit $FAKE_RC. */
function fakeHelper(t: Test): Fixture {
  const dir = tmpDir(t, 'emerge-shim-bashrc-')
  const helper = path.join(dir, 'fake-helper')
  const log = path.join(dir, 'calls')
  fs.writeFileSync(helper, `#!/bin/bash\nprintf '%s\\n' "$*" >> ${log}\nprintf '%b' "\${FAKE_OUT-}"\nexit "\${FAKE_RC:-0}"\n`, { mode: 0o755 })
  return { dir, helper, calls: () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n').filter(Boolean) : []) }
}

// What Portage's phases provide that the module uses.
const PORTAGE_FUNCS = `
einfo() { echo "EINFO: $*" >&2; }
ewarn() { echo "EWARN: $*" >&2; }
register_die_hook() { local h; for h; do [[ " \${EBUILD_DEATH_HOOKS-} " == *" $h "* ]] || export EBUILD_DEATH_HOOKS+=" $h"; done; }
`

const BASE = { PATH: '/usr/bin:/bin', MAKEFLAGS: '--jobserver-auth=fifo:/run/steved/jobserver', FEATURES: 'sandbox jobserver-token' }

function bash(script: string, env: Record<string, string | undefined>) {
  const clean = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined)) as Record<string, string>
  return run('/bin/bash', ['-c', script], { env: clean, timeoutMs: 30_000 })
}

t.test('sourcing defines steved_jobserver_* functions and nothing else: no variable, no output, no command', async (t) => {
  const f = fakeHelper(t)
  const script = `
set -euo pipefail
snap() { compgen -A function | sort; echo ---; (set -o posix; set) | grep -Ev '^(BASH_[A-Z]+|FUNCNAME|PIPESTATUS|LINENO|RANDOM|SRANDOM|SECONDS|EPOCHSECONDS|EPOCHREALTIME|BASHPID|_)='; }
command_not_found_handle() { echo "EXTERNAL $1" >> ${f.dir}/external; return 127; }
snap > ${f.dir}/before
PATH=/dev/null
source ${MODULE}
PATH=/usr/bin:/bin
snap > ${f.dir}/after
`
  const r = await bash(script, { ...BASE, STEVED_JOBSERVER_HELPER: f.helper })
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout + r.stderr, '', 'no output')
  t.notOk(fs.existsSync(path.join(f.dir, 'external')), 'no external command was run')
  const [fb, vb] = fs.readFileSync(path.join(f.dir, 'before'), 'utf8').split('---\n')
  const [fa, va] = fs.readFileSync(path.join(f.dir, 'after'), 'utf8').split('---\n')
  t.equal(va, vb, 'no variable changed')
  const added = fa.split('\n').filter((l) => l !== '' && !fb.split('\n').includes(l))
  t.ok(added.length >= 3, `functions added: ${added.join(' ')}`)
  t.same(added.filter((n) => !n.startsWith('steved_jobserver_')), [], 'all of them prefixed steved_jobserver_')
  t.same(f.calls(), [], 'the helper was not run')
})

t.test('the depend phase (PATH=/dev/null, external commands die) and the other non-build phases: nothing', async (t) => {
  const f = fakeHelper(t)
  const depend = await bash(
    `${PORTAGE_FUNCS}
command_not_found_handle() { echo "EXTERNAL $1" >> ${f.dir}/external; exit 1; }
source ${MODULE}; PATH=/dev/null; steved_jobserver_hook; echo "rc=$? hooks=[$(echo \${EBUILD_DEATH_HOOKS-})]"`,
    { ...BASE, EBUILD_PHASE: 'depend', STEVED_JOBSERVER_HELPER: f.helper },
  )
  t.equal(depend.stdout.trim(), 'rc=0 hooks=[]', depend.stderr)
  t.equal(depend.stderr, '')
  t.notOk(fs.existsSync(path.join(f.dir, 'external')), 'no external command')
  for (const phase of ['pretend', 'nofetch', 'clean', 'package', 'preinst', 'postinst', 'prerm', 'postrm', 'config', 'info']) {
    const r = await bash(`${PORTAGE_FUNCS} source ${MODULE}; steved_jobserver_hook; echo "rc=$? hooks=[$(echo \${EBUILD_DEATH_HOOKS-})]"`, { ...BASE, EBUILD_PHASE: phase, STEVED_JOBSERVER_HELPER: f.helper })
    t.equal(r.stdout.trim(), 'rc=0 hooks=[]', `${phase}: nothing`)
  }
  const misc = await bash(`${PORTAGE_FUNCS} source ${MODULE}; steved_jobserver_hook; echo rc=$?`, { ...BASE, MISC_FUNCTIONS_ARGS: 'preinst_sfperms preinst_suid_scan preinst_qa_check', STEVED_JOBSERVER_HELPER: f.helper })
  t.equal(misc.stdout.trim(), 'rc=0', 'the merge-time checks: nothing')
  t.same(f.calls(), [], 'the helper was never run')
})

t.test('a silent no-op when no jobserver is configured or the helper is missing', async (t) => {
  const f = fakeHelper(t)
  const cases: Array<[string, Record<string, string | undefined>]> = [
    ['no MAKEFLAGS', { MAKEFLAGS: undefined }],
    ['MAKEFLAGS without a jobserver', { MAKEFLAGS: '-j4 -l8' }],
    ['the helper path does not exist', { STEVED_JOBSERVER_HELPER: '/nonexistent/steved-emerge-shim' }],
    ['the helper is not on PATH', { STEVED_JOBSERVER_HELPER: undefined }],
  ]
  for (const [name, over] of cases) {
    const r = await bash(`${PORTAGE_FUNCS} source ${MODULE}; steved_jobserver_hook; echo "rc=$? hooks=[$(echo \${EBUILD_DEATH_HOOKS-})]"`, {
      ...BASE,
      EBUILD_PHASE: 'setup',
      STEVED_JOBSERVER_HELPER: f.helper,
      ...over,
    })
    t.equal(r.stdout.trim(), 'rc=0 hooks=[]', `${name}: nothing registered`)
    t.equal(r.stderr, '', `${name}: silent`)
  }
  t.same(f.calls(), [], 'the helper was never run')
})

t.test('the build phases run `phase --pid $$` and register the die hook; the post-install checks too; die hooks only register', async (t) => {
  const f = fakeHelper(t)
  const env = { ...BASE, STEVED_JOBSERVER_HELPER: f.helper }
  for (const phase of ['setup', 'unpack', 'prepare', 'configure', 'compile', 'test', 'install']) {
    const r = await bash(`${PORTAGE_FUNCS} source ${MODULE}; steved_jobserver_hook; echo "$$ [$(echo \${EBUILD_DEATH_HOOKS-})]"`, { ...env, EBUILD_PHASE: phase })
    const [pid, hooks] = r.stdout.trim().split(' ')
    t.equal(hooks, '[steved_jobserver_die_hook]', `${phase}: die hook registered`)
    t.equal(f.calls().at(-1), `phase --pid ${pid}`, `${phase}: the helper ran for this shell`)
  }
  const n = f.calls().length
  // As misc-functions.sh does: a shell variable, not exported, so the helper is told by argument.
  const post = await bash(`${PORTAGE_FUNCS} MISC_FUNCTIONS_ARGS='install_qa_check install_symlink_html_docs install_hooks'; source ${MODULE}; steved_jobserver_hook; echo $$`, env)
  t.equal(f.calls().at(-1), `built --pid ${post.stdout.trim()}`, 'post-install checks: the helper ran `built --pid $$`')
  const die = await bash(`${PORTAGE_FUNCS} source ${MODULE}; steved_jobserver_hook; echo "[$(echo \${EBUILD_DEATH_HOOKS-})]"`, { ...env, MISC_FUNCTIONS_ARGS: 'die_hooks' })
  t.equal(die.stdout.trim(), '[steved_jobserver_die_hook]', 'die hooks: the hook is registered, for die_hooks to run')
  t.equal(f.calls().length, n + 1, 'and the helper did not run')
  const hook = await bash(`${PORTAGE_FUNCS} source ${MODULE}; steved_jobserver_die_hook; echo $$`, { ...env, MISC_FUNCTIONS_ARGS: 'die_hooks' })
  t.equal(f.calls().at(-1), `die --pid ${hook.stdout.trim()}`, 'the die hook runs `die --pid $$`')
  const twice = await bash(`${PORTAGE_FUNCS} source ${MODULE}; steved_jobserver_hook; source ${MODULE}; steved_jobserver_hook; echo "[$(echo \${EBUILD_DEATH_HOOKS-})]"`, { ...env, EBUILD_PHASE: 'compile' })
  t.equal(twice.stdout.trim(), '[steved_jobserver_die_hook]', 'registered once however often the bashrc is sourced')
  const only = await bash(`${PORTAGE_FUNCS} source ${MODULE}; steved_jobserver_hook; echo rc=$?`, { ...env, FEATURES: 'sandbox', EBUILD_PHASE: 'compile' })
  t.equal(only.stdout.trim(), 'rc=0')
  t.match(f.calls().at(-1), /^phase --pid \d+$/, 'no FEATURES=jobserver-token needed: the bashrc hook is the opt-in')
})

t.test("the helper's info/warn lines become einfo/ewarn; its failure never fails the phase", async (t) => {
  const f = fakeHelper(t)
  const r = await bash(`${PORTAGE_FUNCS} source ${MODULE}; steved_jobserver_hook; echo rc=$?`, {
    ...BASE,
    EBUILD_PHASE: 'compile',
    STEVED_JOBSERVER_HELPER: f.helper,
    FAKE_OUT: 'info jobserver: holding 1 token\\nwarn jobserver: careful\\nsomething else\\ninfo last line without newline',
    FAKE_RC: '3',
  })
  t.equal(r.stdout.trim(), 'rc=0', 'the hook returns 0 although the helper exited 3')
  t.same(r.stderr.trim().split('\n'), ['EINFO: jobserver: holding 1 token', 'EWARN: jobserver: careful', 'EINFO: last line without newline'], 'einfo and ewarn, unknown lines dropped')
  const noFuncs = await bash(`source ${MODULE}; steved_jobserver_run phase --pid $$`, { ...BASE, STEVED_JOBSERVER_HELPER: f.helper, FAKE_OUT: 'info plain\\n' })
  t.equal(noFuncs.stderr, ' * plain\n', 'outside Portage (no einfo) it still prints')
})

t.test("emake keeps the pool on Portage < 3.0.72 (bug 692576): emake gets MAKEOPTS without -j, the phase keeps the user's", async (t) => {
  const f = fakeHelper(t)
  // An emake helper of Portage < 3.0.72: it hands MAKEOPTS to make whatever MAKEFLAGS says.
  const oldBin = path.join(f.dir, 'old-portage-bin')
  fs.mkdirSync(path.join(oldBin, 'ebuild-helpers'), { recursive: true })
  fs.writeFileSync(path.join(oldBin, 'ebuild-helpers', 'emake'), '#!/bin/bash\necho "make ${MAKEOPTS} $*"\n', { mode: 0o755 })
  const env = { ...BASE, STEVED_JOBSERVER_HELPER: f.helper, EBUILD_PHASE: 'compile', PATH: `${path.join(oldBin, 'ebuild-helpers')}:/usr/bin:/bin` }
  const script = `${PORTAGE_FUNCS} source ${MODULE}; steved_jobserver_hook; emake all V=1; echo "phase MAKEOPTS=[$MAKEOPTS]"`
  const cases: Array<[string, string]> = [
    ['-j32 -l32', '-l32'],
    ['-j 8 --load-average=8', '--load-average=8'],
    ['--jobs=4 -k', '-k'],
    ['--jobs 4 -l4 -j', '-l4'],
  ]
  for (const [makeopts, kept] of cases) {
    const r = await bash(script, { ...env, PORTAGE_BIN_PATH: oldBin, MAKEOPTS: makeopts })
    t.same(r.stdout.trim().split('\n'), [`make ${kept} all V=1`, `phase MAKEOPTS=[${makeopts}]`], `MAKEOPTS="${makeopts}": make gets "${kept}", the phase keeps it whole`)
  }
  // The emake of the Portage wheels the tests run already ignores MAKEOPTS: no wrapper there.
  for (const version of PORTAGE_VERSIONS) {
    const r = await bash(`${PORTAGE_FUNCS} source ${MODULE}; steved_jobserver_hook; declare -F emake || echo none`, { ...env, PORTAGE_BIN_PATH: portageBin(version), MAKEOPTS: '-j32 -l32' })
    t.equal(r.stdout.trim(), 'none', `Portage ${version}: its own emake is used as it is`)
  }
  const none = await bash(`${PORTAGE_FUNCS} source ${MODULE}; steved_jobserver_hook; declare -F emake || echo none`, { ...env, PORTAGE_BIN_PATH: oldBin, MAKEFLAGS: '-l32', MAKEOPTS: '-j32' })
  t.equal(none.stdout.trim(), 'none', 'no jobserver in MAKEFLAGS: emake is left alone')
})
