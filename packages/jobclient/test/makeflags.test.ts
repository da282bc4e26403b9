// parseMakeflags, fromEnv and makeflagsForChild: tables of inputs we wrote ourselves, after
// what make 4.3/4.4, cargo, spack and users actually put in these variables.
import t from 'tap'
import { fromEnv, makeflagsForChild, parseMakeflags, type Makeflags } from '../dist/makeflags'

const fifo = (path: string) => ({ style: 'fifo' as const, path })
const pipe = (read: number, write: number) => ({ style: 'pipe' as const, read, write })
const none = { auth: null, dryRun: false, invalidated: false }

type Row = [input: string | undefined, expected: Makeflags | { throws: string }, why: string]

const rows: Row[] = [
  [undefined, none, 'unset'],
  ['', none, 'empty'],
  [' ', none, 'blank'],
  [' -j4 --jobserver-auth=3,4', { ...none, auth: pipe(3, 4), jobs: 4 }, 'make 4.3, no flag letters'],
  ['s -j4 --jobserver-auth=3,4', { ...none, auth: pipe(3, 4), jobs: 4 }, 'make 4.3 with -s'],
  [' -j4 --jobserver-auth=fifo:/tmp/GMfifo123', { ...none, auth: fifo('/tmp/GMfifo123'), jobs: 4 }, 'make 4.4 fifo'],
  ['--jobserver-auth=fifo:/dev/steve', { ...none, auth: fifo('/dev/steve') }, 'system-wide steve setting'],
  [' --jobserver-auth=fifo:/run/steved/jobserver', { ...none, auth: fifo('/run/steved/jobserver') }, 'steved FUSE file'],
  ['--jobserver-fds=5,6', { ...none, auth: pipe(5, 6) }, 'legacy --jobserver-fds alone'],
  ['--jobserver-fds=5,6 --jobserver-auth=7,8', { ...none, auth: pipe(7, 8) }, '--jobserver-auth beats --jobserver-fds'],
  ['--jobserver-auth=7,8 --jobserver-fds=5,6', { ...none, auth: pipe(7, 8) }, '... in either order'],
  ['-j --jobserver-fds=fifo:/a --jobserver-auth=fifo:/a', { ...none, auth: fifo('/a'), jobs: Infinity }, 'cargo CARGO_MAKEFLAGS'],
  ['--jobserver-auth=fifo:/a --jobserver-auth=fifo:/b', { ...none, auth: fifo('/b') }, 'last auth wins'],
  ['--jobserver-auth=fifo:/a --jobserver-auth=3,4', { ...none, auth: pipe(3, 4) }, 'last auth wins across styles'],
  [' -j4 --jobserver-auth=3,4 --jobserver-auth=-2,-2', { ...none, invalidated: true, jobs: 4 }, 'make 4.4 invalidates for non-recursive children'],
  ['--jobserver-auth=-2,-2 --jobserver-auth=3,4', { ...none, auth: pipe(3, 4) }, 'a later valid auth beats an invalidation'],
  ['n -j4 --jobserver-auth=fifo:/a', { ...none, dryRun: true, jobs: 4 }, 'dry run: n among the flag letters'],
  ['kns --jobserver-auth=fifo:/a', { ...none, dryRun: true }, 'n anywhere in the first word'],
  ['ks --jobserver-auth=fifo:/a', { ...none, auth: fifo('/a') }, 'letters without n'],
  [' n --jobserver-auth=fifo:/a', { ...none, auth: fifo('/a') }, 'after a leading blank, "n" is not the flag word'],
  ['-n --jobserver-auth=fifo:/a', { ...none, dryRun: true }, 'MFLAGS-style -n'],
  ['--dry-run --jobserver-auth=fifo:/a', { ...none, dryRun: true }, 'long dry-run option'],
  ['--no-print-directory --jobserver-auth=fifo:/a', { ...none, auth: fifo('/a') }, 'long options are not flag letters'],
  ['-Cproj --jobserver-auth=fifo:/a', { ...none, auth: fifo('/a') }, '-C takes an argument: "proj" holds no -j and no -n'],
  ['-kj4 --jobserver-auth=fifo:/a', { ...none, auth: fifo('/a'), jobs: 4 }, '-j inside a cluster'],
  ['-j 8 --jobserver-auth=fifo:/a', { ...none, auth: fifo('/a'), jobs: 8 }, "spack's '-j N'"],
  ['-j --jobserver-auth=fifo:/a', { ...none, auth: fifo('/a'), jobs: Infinity }, 'bare -j: no limit'],
  ['--jobs=6 --load-average=2.5 --jobserver-auth=fifo:/a', { ...none, auth: fifo('/a'), jobs: 6, load: 2.5 }, 'long -j and -l'],
  ['-j4 -l3.5', { ...none, jobs: 4, load: 3.5 }, '-j and -l, no jobserver'],
  ['-l', { ...none, load: Infinity }, 'bare -l: no limit'],
  ['--max-load=1', { ...none, load: 1 }, '--max-load alias'],
  [' --jobserver-auth=fifo:/a -- CFLAGS=-n\\ -j9 --jobserver-auth=fifo:/evil', { ...none, auth: fifo('/a') }, 'variables after -- are not options'],
  ['--jobserver-auth=fifo:/a\\ b', { ...none, auth: fifo('/a\\ b') }, 'escaped blank stays in the word'],
  ['--jobserver-auth=bogus', { throws: 'ERR_JOBSERVER_BAD_AUTH' }, 'neither fifo: nor R,W'],
  ['--jobserver-auth=fifo:', { throws: 'ERR_JOBSERVER_BAD_AUTH' }, 'empty fifo path'],
  ['--jobserver-auth=3', { throws: 'ERR_JOBSERVER_BAD_AUTH' }, 'one fd'],
  ['--jobserver-auth', { throws: 'ERR_JOBSERVER_BAD_AUTH' }, 'no value'],
  ['--jobserver-auth=fifo:/a --jobserver-auth=sem:x', { throws: 'ERR_JOBSERVER_BAD_AUTH' }, 'the last auth decides, even when bad'],
  ['--jobserver-auth=bogus --jobserver-auth=fifo:/a', { ...none, auth: fifo('/a') }, 'an earlier bad auth does not matter'],
]

t.test('parseMakeflags', async (t) => {
  for (const [input, expected, why] of rows) {
    if ('throws' in expected) {
      t.throws(() => parseMakeflags(input), { code: expected.throws }, `${why}: ${JSON.stringify(input)}`)
    } else {
      t.same(parseMakeflags(input), expected, `${why}: ${JSON.stringify(input)}`)
    }
  }
})

t.test('fromEnv: the first of CARGO_MAKEFLAGS, MAKEFLAGS, MFLAGS that is set decides', async (t) => {
  type EnvRow = [env: NodeJS.ProcessEnv, source: string | null, auth: unknown, why: string]
  const envRows: EnvRow[] = [
    [{}, null, null, 'nothing set'],
    [{ MAKEFLAGS: '--jobserver-auth=fifo:/m' }, 'MAKEFLAGS', fifo('/m'), 'MAKEFLAGS'],
    [{ MFLAGS: '-j4 --jobserver-auth=3,4' }, 'MFLAGS', pipe(3, 4), 'MFLAGS alone'],
    [{ CARGO_MAKEFLAGS: '--jobserver-auth=fifo:/c', MAKEFLAGS: '--jobserver-auth=fifo:/m' }, 'CARGO_MAKEFLAGS', fifo('/c'), 'cargo first'],
    [{ MAKEFLAGS: '--jobserver-auth=fifo:/m', MFLAGS: '--jobserver-auth=fifo:/f' }, 'MAKEFLAGS', fifo('/m'), 'MAKEFLAGS before MFLAGS'],
    [{ CARGO_MAKEFLAGS: '-j4', MAKEFLAGS: '--jobserver-auth=fifo:/m' }, 'CARGO_MAKEFLAGS', null, 'a set variable without auth still decides (jobserver-rs)'],
    [{ MAKEFLAGS: '', MFLAGS: '--jobserver-auth=fifo:/f' }, 'MAKEFLAGS', null, '`MAKEFLAGS= cmd` turns the jobserver off'],
  ]
  for (const [env, source, auth, why] of envRows) {
    const r = fromEnv(env)
    if (source === null) t.equal(r, null, why)
    else {
      t.equal(r?.source, source, `${why}: source`)
      t.same(r?.auth, auth, `${why}: auth`)
    }
  }
  t.throws(() => fromEnv({ MAKEFLAGS: '--jobserver-auth=x' }), { code: 'ERR_JOBSERVER_BAD_AUTH' }, 'bad auth')
})

t.test('makeflagsForChild: our auth, no -j, other flags and variables kept', async (t) => {
  const a = fifo('/run/steved/jobserver')
  const auth = '--jobserver-auth=fifo:/run/steved/jobserver'
  type ChildRow = [original: string | undefined, expected: string, why: string]
  const childRows: ChildRow[] = [
    [undefined, ` ${auth}`, 'nothing to keep'],
    ['', ` ${auth}`, 'empty'],
    [' -j4 --jobserver-auth=3,4', ` ${auth}`, 'make 4.3 value: -j and old auth dropped'],
    ['ks -j8 --jobserver-auth=fifo:/tmp/x -- CC=clang', `ks ${auth} -- CC=clang`, 'flag letters and variables kept'],
    ['-j --jobserver-fds=3,4 --jobserver-auth=3,4', ` ${auth}`, 'cargo value'],
    ['-kj4 -l2 --jobs=3', ` -k -l2 ${auth}`, '-j taken out of a cluster, -l kept'],
    ['-j 8 --no-print-directory', ` --no-print-directory ${auth}`, "spack's -j N"],
  ]
  for (const [original, expected, why] of childRows) t.equal(makeflagsForChild(original, a), expected, why)
  t.equal(makeflagsForChild(undefined, pipe(3, 4)), ' --jobserver-auth=3,4', 'pipe form for make 4.3')
  for (const [original] of childRows) {
    const back = parseMakeflags(makeflagsForChild(original, a))
    t.same(back.auth, a, `the child parses our auth back from ${JSON.stringify(original)}`)
    t.equal(back.jobs, undefined, `and sees no -j in it`)
  }
})
