// The pure decisions of the shim, by table: where in a job a process is, the user's settings,
// which Portage this is, and what the job holds and caps.
import t from 'tap'
import { compareVersions, contextOf, detectPortage, makePlan, NATIVE_SINCE, parseSettings, parseVersion, type PortageInfo } from '../dist/plan'

t.test('contextOf: the build phases, the post-install checks, die hooks; nothing else', async (t) => {
  const cases: Array<[Record<string, string>, unknown]> = [
    ...['setup', 'unpack', 'prepare', 'configure', 'compile', 'test', 'install'].map((phase): [Record<string, string>, unknown] => [{ EBUILD_PHASE: phase }, { kind: 'build', phase }]),
    [{ MISC_FUNCTIONS_ARGS: 'install_qa_check install_symlink_html_docs install_hooks' }, { kind: 'post-install' }],
    [{ EBUILD_PHASE: '', MISC_FUNCTIONS_ARGS: 'die_hooks' }, { kind: 'die-hooks' }],
    [{ MISC_FUNCTIONS_ARGS: 'preinst_sfperms preinst_suid_scan preinst_qa_check' }, { kind: 'ignored' }],
    [{ MISC_FUNCTIONS_ARGS: 'success_hooks' }, { kind: 'ignored' }],
    [{ EBUILD_PHASE: 'compile', MISC_FUNCTIONS_ARGS: 'die_hooks' }, { kind: 'ignored' }],
    ...['depend', 'pretend', 'nofetch', 'clean', 'package', 'preinst', 'postinst', 'prerm', 'postrm', 'config', 'info', 'instprep'].map(
      (phase): [Record<string, string>, unknown] => [{ EBUILD_PHASE: phase }, { kind: 'ignored' }],
    ),
    [{}, { kind: 'ignored' }],
  ]
  for (const [env, want] of cases) t.same(contextOf(env), want, JSON.stringify(env))
})

t.test('parseSettings: FEATURES and the package.env variables; bad values are named and ignored', async (t) => {
  const cases: Array<[Record<string, string>, { featuresToken: boolean; tokens: number | null; maxJobs: number | null; problems: number }]> = [
    [{ FEATURES: 'sandbox jobserver-token userpriv' }, { featuresToken: true, tokens: null, maxJobs: null, problems: 0 }],
    [{ FEATURES: 'sandbox jobserver-tokens' }, { featuresToken: false, tokens: null, maxJobs: null, problems: 0 }],
    [{ FEATURES: 'jobserver-token -jobserver-token' }, { featuresToken: false, tokens: null, maxJobs: null, problems: 0 }],
    [{ JOBSERVER_TOKENS: '2', JOBSERVER_MAX_JOBS: ' 4 ' }, { featuresToken: false, tokens: 2, maxJobs: 4, problems: 0 }],
    [{ JOBSERVER_TOKENS: '', JOBSERVER_MAX_JOBS: '' }, { featuresToken: false, tokens: null, maxJobs: null, problems: 0 }],
    [{ JOBSERVER_TOKENS: '0' }, { featuresToken: false, tokens: null, maxJobs: null, problems: 1 }],
    [{ JOBSERVER_MAX_JOBS: '-j4' }, { featuresToken: false, tokens: null, maxJobs: null, problems: 1 }],
    [{ JOBSERVER_MAX_JOBS: '2.5', JOBSERVER_TOKENS: 'two' }, { featuresToken: false, tokens: null, maxJobs: null, problems: 2 }],
  ]
  for (const [env, want] of cases) {
    const s = parseSettings(env)
    t.same({ featuresToken: s.featuresToken, tokens: s.tokens, maxJobs: s.maxJobs, problems: s.problems.length }, want, JSON.stringify(env))
  }
})

t.test('versions: leading dotted numbers, compared numerically', async (t) => {
  const cases: Array<[string, number[] | null, boolean]> = [
    ['3.0.74', [3, 0, 74], true],
    ['3.0.73', [3, 0, 73], false],
    ['3.0.82', [3, 0, 82], true],
    ['3.0.100', [3, 0, 100], true],
    ['3.0.74.dev5+gabc1234-dirty', [3, 0, 74], true],
    ['3.0.73-r1', [3, 0, 73], false],
    ['3.1', [3, 1], true],
    ['2.3.99.9', [2, 3, 99, 9], false],
    ['HEAD', null, false],
  ]
  for (const [s, v, native] of cases) {
    t.same(parseVersion(s), v, s)
    if (v) t.equal(compareVersions(v, NATIVE_SINCE) >= 0, native, `${s} ${native ? '>=' : '<'} 3.0.74`)
  }
})

t.test('detectPortage: PORTAGE_VERSION, else the installed VERSION literal, else the feature in Scheduler.py', async (t) => {
  const pym = '/usr/lib/python3.13/site-packages'
  const files = (map: Record<string, string>) => (p: string) => map[p] ?? null
  const cases: Array<[string, Record<string, string>, Record<string, string>, PortageInfo]> = [
    ['PORTAGE_VERSION wins', { PORTAGE_VERSION: '3.0.82', PORTAGE_PYM_PATH: pym }, { [`${pym}/portage/__init__.py`]: 'VERSION = "3.0.60"\n' }, { version: '3.0.82', native: true, how: 'PORTAGE_VERSION' }],
    ['an old PORTAGE_VERSION', { PORTAGE_VERSION: '3.0.73' }, {}, { version: '3.0.73', native: false, how: 'PORTAGE_VERSION' }],
    ['installed Portage', { PORTAGE_PYM_PATH: pym }, { [`${pym}/portage/__init__.py`]: 'import os\n\nVERSION = "3.0.77"\n' }, { version: '3.0.77', native: true, how: `${pym}/portage/__init__.py` }],
    [
      'a PyPI wheel: "HEAD" for a source tree first, then the release',
      { PORTAGE_PYM_PATH: pym },
      { [`${pym}/portage/__init__.py`]: '        VERSION = "HEAD"\n    VERSION = _LazyVersion()\nelse:\n    VERSION = "3.0.83"\n' },
      { version: '3.0.83', native: true, how: `${pym}/portage/__init__.py` },
    ],
    [
      'PORTAGE_VERSION=HEAD falls through',
      { PORTAGE_VERSION: 'HEAD', PORTAGE_PYM_PATH: pym },
      { [`${pym}/portage/__init__.py`]: "VERSION = '3.0.70'\n" },
      { version: '3.0.70', native: false, how: `${pym}/portage/__init__.py` },
    ],
    [
      'a git checkout: no literal, the feature is in the scheduler',
      { PORTAGE_PYM_PATH: pym },
      { [`${pym}/portage/__init__.py`]: '    VERSION = "@VERSION@"\n', [`${pym}/_emerge/Scheduler.py`]: 'if "jobserver-token" in self.settings.features:\n' },
      { version: null, native: true, how: `${pym}/_emerge/Scheduler.py` },
    ],
    ['a checkout without the feature', { PORTAGE_PYM_PATH: pym }, { [`${pym}/_emerge/Scheduler.py`]: 'class Scheduler:\n' }, { version: null, native: false, how: `${pym}/_emerge/Scheduler.py` }],
    ['nothing known', {}, {}, { version: null, native: false, how: 'unknown' }],
  ]
  for (const [name, env, map, want] of cases) t.same(detectPortage(env, files(map)), want, name)
})

t.test('makePlan: who holds the job tokens, and the group cap L = MAX_JOBS - 1 + holder tokens', async (t) => {
  const old: PortageInfo = { version: '3.0.73', native: false, how: 'PORTAGE_VERSION' }
  const native: PortageInfo = { version: '3.0.82', native: true, how: 'PORTAGE_VERSION' }
  type Row = [string, { featuresToken: boolean; tokens: number | null; maxJobs: number | null }, PortageInfo, [number, number, number, number | null], string[]]
  const rows: Row[] = [
    ['the shim holds the token', { featuresToken: true, tokens: null, maxJobs: null }, old, [1, 0, 1, null], []],
    ['native: emerge holds it', { featuresToken: true, tokens: null, maxJobs: null }, native, [1, 1, 0, null], ['info']],
    ['native, 2 tokens: the shim holds the second', { featuresToken: true, tokens: 2, maxJobs: null }, native, [2, 1, 1, null], ['info']],
    ['cap 4 with the holder in the group', { featuresToken: true, tokens: null, maxJobs: 4 }, old, [1, 0, 1, 4], []],
    ['cap 4, native: the token is outside the group', { featuresToken: true, tokens: null, maxJobs: 4 }, native, [1, 1, 0, 3], ['info']],
    ['cap 1 with the holder: exact', { featuresToken: true, tokens: null, maxJobs: 1 }, old, [1, 0, 1, 1], []],
    ['cap 1, native: not expressible', { featuresToken: true, tokens: null, maxJobs: 1 }, native, [1, 1, 0, 1], ['info', 'warn']],
    ['cap without FEATURES: the shim holds the token all the same', { featuresToken: false, tokens: null, maxJobs: 4 }, old, [1, 0, 1, 4], []],
    ['native Portage without FEATURES=jobserver-token: the shim holds it', { featuresToken: false, tokens: null, maxJobs: null }, native, [1, 0, 1, null], []],
    ['tokens without the feature', { featuresToken: false, tokens: 3, maxJobs: null }, native, [3, 0, 3, null], []],
    ['2 tokens, cap 3', { featuresToken: true, tokens: 2, maxJobs: 3 }, old, [2, 0, 2, 4], []],
    ['old Portage, no FEATURES: the bashrc hook alone asks for the token', { featuresToken: false, tokens: null, maxJobs: null }, old, [1, 0, 1, null], []],
  ]
  for (const [name, s, p, [jobTokens, portageTokens, holderTokens, groupLimit], levels] of rows) {
    const plan = makePlan({ ...s, problems: [] }, p, 'www-client/chromium-130.0')
    t.same([plan.jobTokens, plan.portageTokens, plan.holderTokens, plan.groupLimit], [jobTokens, portageTokens, holderTokens, groupLimit], name)
    t.same(plan.notes.map((n) => n.level), levels, `${name}: notes`)
    t.equal(plan.groupName, 'www-client/chromium-130.0')
    if (plan.groupLimit !== null && s.maxJobs !== null && plan.groupLimit >= plan.holderTokens) {
      // make runs 1 job on its implicit slot plus one per token it may read under the cap.
      const jobs = 1 + plan.groupLimit - plan.holderTokens
      if (!levels.includes('warn')) t.equal(jobs, s.maxJobs, `${name}: the build runs at most ${s.maxJobs} jobs`)
    }
  }
  const bad = makePlan({ featuresToken: true, tokens: null, maxJobs: null, problems: ['JOBSERVER_TOKENS=x is ignored'] }, old, 'a/b-1')
  t.same(bad.notes, [{ level: 'warn', text: 'JOBSERVER_TOKENS=x is ignored' }], 'ignored settings are warned about')
})
