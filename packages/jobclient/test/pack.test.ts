// jobclient as an npm user gets it: `npm pack` (prepack: tsc -b + prebuildify), the tarball's
// file list, then `npm install TARBALL` into new directories outside the checkout, each run
// with the README's example against a real steved on a FUSE file:
//   - the shipped prebuild (no compiler used: no build/ appears),
//   - a build from source at install (npm_config_build_from_source, node-gyp --nodedir),
//   - neither possible: the install script's and loadNative's messages say what to run.
// Dependencies come from the npm cache (--prefer-offline); node-gyp never downloads headers
// (npm_config_nodedir = the prefix of this Node.js, as scripts/build.sh uses).
// Needs root and /dev/fuse (steved's FUSE file); fails loudly without them.

import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { run, type Done } from '../../../test/helpers/proc'
import { ROOT, requireFuseRoot, startSteved, tmpDir } from '../../../test/helpers/steved'

const PKG = path.join(ROOT, 'packages', 'jobclient')
const STEVECTL = path.join(ROOT, 'packages', 'steved', 'bin', 'stevectl.js')
const NODE_PREFIX = path.dirname(path.dirname(fs.realpathSync(process.execPath)))
const MANIFEST = JSON.parse(fs.readFileSync(path.join(PKG, 'package.json'), 'utf8')) as { version: string; bin: Record<string, string> }
const VERSION = MANIFEST.version

// The environment of every npm call: no jobserver from the caller, nothing from the checkout.
const baseEnv: NodeJS.ProcessEnv = { ...process.env, npm_config_nodedir: NODE_PREFIX }
for (const k of ['MAKEFLAGS', 'MFLAGS', 'CARGO_MAKEFLAGS', 'NODE_PATH', 'npm_config_build_from_source']) delete baseEnv[k]
for (const k of Object.keys(baseEnv)) if (k.startsWith('npm_package_') || k.startsWith('npm_lifecycle_')) delete baseEnv[k]

const NPM_FLAGS = ['--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error']

/** A finished command's output, for the diagnostics tap prints when an assertion fails. */
function diag(d: Done): { status: number | string | null; stdout: string; stderr: string } {
  return { status: d.code ?? d.signal, stdout: d.stdout, stderr: d.stderr }
}
function show(d: Done): string {
  return `status ${d.code ?? d.signal}\nstdout: ${d.stdout}\nstderr: ${d.stderr}`
}

/** The first ```js block of the README: the example the Install section points at. */
function readmeExample(): string {
  const m = /^```js\n([\s\S]*?)^```$/m.exec(fs.readFileSync(path.join(PKG, 'README.md'), 'utf8'))
  if (!m) throw new Error('packages/jobclient/README.md has no ```js block (the example)')
  return m[1]
}

/** A new project outside the checkout: package.json and the README's example. */
function newProject(name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `jobclient-${name}-`))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  if (path.relative(ROOT, dir).split(path.sep)[0] !== '..') throw new Error(`${dir} is inside ${ROOT}`)
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `try-${name}`, version: '1.0.0', private: true }))
  fs.writeFileSync(path.join(dir, 'example.mjs'), readmeExample())
  return dir
}

async function npm(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 300000): Promise<Done> {
  return run('npm', args, { cwd, env: { ...baseEnv, ...env }, timeoutMs })
}

interface Status {
  counters: { granted: number; returned: number; reclaimed: number }
  held?: number
  [k: string]: unknown
}
async function status(jobserver: string): Promise<Status> {
  const r = await run(process.execPath, [STEVECTL, '--device', jobserver, 'status', '--json'], { env: baseEnv })
  if (r.code !== 0) throw new Error(`stevectl status --json: ${show(r)}`)
  return JSON.parse(r.stdout) as Status
}
async function held(jobserver: string): Promise<number> {
  const r = await run(process.execPath, [STEVECTL, '--device', jobserver, '--get-held'], { env: baseEnv })
  if (r.code !== 0) throw new Error(`stevectl --get-held: ${show(r)}`)
  return Number(r.stdout.trim())
}

/** Run the README's example in PROJECT against steved: one token taken and returned. */
async function exampleAgainstSteved(tt: Test, project: string, jobserver: string): Promise<void> {
  const before = await status(jobserver)
  const r = await run(process.execPath, ['example.mjs'], {
    cwd: project,
    env: { ...baseEnv, MAKEFLAGS: `--jobserver-auth=fifo:${jobserver}` },
  })
  tt.equal(r.code, 0, "the README's example runs", diag(r))
  tt.equal(r.stdout.trim(), 'explicit token, 1 held', 'it held one token it read from steved')
  const after = await status(jobserver)
  tt.equal(after.counters.granted - before.counters.granted, 1, 'steved granted it one token')
  tt.equal(after.counters.returned - before.counters.returned, 1, 'and got it back')
  tt.equal(after.counters.reclaimed, before.counters.reclaimed, 'nothing had to be reclaimed')
  tt.equal(await held(jobserver), 0, 'no token is out afterwards')
}

t.test('npm pack, npm install TARBALL outside the checkout, the README example against steved', async (t) => {
  requireFuseRoot()
  // Pack a copy of the package, so the prepack rebuild (prebuildify runs node-gyp rebuild)
  // never removes the build/ that other processes of this checkout load. The copy sits where
  // the package does relative to the root's tsconfig.base.json and node_modules.
  const work = tmpDir(t, 'jobclient-pack-')
  const stage = path.join(work, 'root')
  const copy = path.join(stage, 'packages', 'jobclient')
  fs.mkdirSync(path.dirname(copy), { recursive: true })
  fs.copyFileSync(path.join(ROOT, 'tsconfig.base.json'), path.join(stage, 'tsconfig.base.json'))
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(stage, 'node_modules'))
  const skip = new Set(['node_modules', 'build', 'prebuilds'])
  fs.cpSync(PKG, copy, {
    recursive: true,
    preserveTimestamps: true,
    filter: (src) => !skip.has(path.relative(PKG, src).split(path.sep)[0]) && !src.endsWith('.tgz'),
  })
  const out = path.join(work, 'out')
  fs.mkdirSync(out)
  // No nodedir from outside: scripts/prebuild.js must find this Node.js's headers itself.
  const packed = await npm(copy, ['pack', '--json', '--pack-destination', out, '--loglevel=error'], { npm_config_nodedir: undefined })
  t.equal(packed.code, 0, 'npm pack', diag(packed))
  if (packed.code !== 0) return
  const info = JSON.parse(packed.stdout.slice(packed.stdout.lastIndexOf('[\n  {'))) as { filename: string; files: { path: string }[] }[]
  const tarball = path.join(out, info[0].filename)
  t.equal(info[0].filename, `jobclient-${VERSION}.tgz`, 'one tarball, named by the version')

  const files = info[0].files.map((f) => f.path).sort()
  const dist = fs
    .readdirSync(path.join(PKG, 'src'))
    .filter((f) => f.endsWith('.ts'))
    .flatMap((f) => [`dist/${f.replace(/\.ts$/, '.js')}`, `dist/${f.replace(/\.ts$/, '.d.ts')}`])
  const want = [
    'README.md',
    'package.json',
    ...Object.values(MANIFEST.bin).map((b) => b.replace(/^\.\//, '')),
    'binding.gyp',
    'native/jobclient.cc',
    `prebuilds/linux-${os.arch()}/jobclient.glibc.node`,
    ...dist,
  ].sort()
  t.same(files, want, 'the tarball holds exactly: README, package.json, the bin commands, dist JS and types, the addon sources and the prebuild')

  await t.test('installed with the shipped prebuild: no compiler used', async (t) => {
    const proj = newProject('prebuilt')
    const r = await npm(proj, ['install', tarball, ...NPM_FLAGS])
    t.equal(r.code, 0, `npm install ${path.basename(tarball)}`, diag(r))
    const inst = path.join(proj, 'node_modules', 'jobclient')
    t.notOk(fs.existsSync(path.join(inst, 'build')), 'node-gyp-build found the prebuild and compiled nothing')
    t.ok(fs.existsSync(path.join(inst, 'dist', 'index.d.ts')), 'the types are installed')
    t.equal(JSON.parse(fs.readFileSync(path.join(inst, 'package.json'), 'utf8')).types, 'dist/index.d.ts', 'package.json names them')

    // The types resolve for a TypeScript user of the package (checked by the checkout's tsc).
    fs.writeFileSync(
      path.join(proj, 'use.ts'),
      "import { JobClient, type Token } from 'jobclient'\nconst c: JobClient = JobClient.fromEnv()\nconst n: number = c.held\nexport const f = (t: Token): boolean => t.release() && n > 0\n",
    )
    const tsc = await run(
      process.execPath,
      [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext',
        '--typeRoots', path.join(ROOT, 'node_modules', '@types'), '--types', 'node', 'use.ts'],
      { cwd: proj, env: baseEnv },
    )
    t.equal(tsc.code, 0, 'tsc --noEmit on a file that imports jobclient', diag(tsc))

    // Offline, so a missing local bin fails here instead of fetching a registry package.
    const help = await run('npx', ['jobclient', '--help'], { cwd: proj, env: { ...baseEnv, npm_config_offline: 'true' } })
    t.equal(help.code, 0, 'npx jobclient --help', diag(help))
    t.match(help.stdout, /^Usage: jobclient/, 'npx jobclient --help prints the usage')

    const s = await startSteved(t, { jobs: 2 })
    await exampleAgainstSteved(t, proj, s.path)
    await s.stop()
  })

  await t.test('installed with a build from source (node-gyp against the local headers)', async (t) => {
    const proj = newProject('source')
    const r = await npm(proj, ['install', tarball, ...NPM_FLAGS], { npm_config_build_from_source: 'true' })
    t.equal(r.code, 0, 'npm install with npm_config_build_from_source', diag(r))
    t.ok(fs.existsSync(path.join(proj, 'node_modules', 'jobclient', 'build', 'Release', 'jobclient.node')),
      'the install script compiled build/Release/jobclient.node')
    const s = await startSteved(t, { jobs: 1 })
    await exampleAgainstSteved(t, proj, s.path)
    await s.stop()
  })

  await t.test('neither a prebuild nor a build: the messages say what is missing and what to run', async (t) => {
    const proj = newProject('nobuild')
    const noHeaders = tmpDir(t, 'jobclient-noheaders-')
    // Building from source against a directory without headers must fail at install, and say why.
    const failed = await npm(proj, ['install', tarball, ...NPM_FLAGS], { npm_config_build_from_source: 'true', npm_config_nodedir: noHeaders })
    t.not(failed.code, 0, 'npm install fails when the addon cannot be built')
    t.match(failed.stdout + failed.stderr, /jobclient: no prebuilt addon fits this system and building it failed/, 'with the install script\'s line')
    t.match(failed.stdout + failed.stderr, /python3, make, a C\+\+17 compiler and the Node\.js headers/, 'which names what the build needs')

    // Installed without scripts and without the prebuild: the first use says what to run.
    const r = await npm(proj, ['install', '--ignore-scripts', tarball, ...NPM_FLAGS])
    t.equal(r.code, 0, 'npm install --ignore-scripts', diag(r))
    fs.rmSync(path.join(proj, 'node_modules', 'jobclient', 'prebuilds'), { recursive: true, force: true })
    const use = await run(process.execPath, ['example.mjs'], {
      cwd: proj,
      env: { ...baseEnv, MAKEFLAGS: '--jobserver-auth=fifo:/nonexistent' },
    })
    t.not(use.code, 0, 'the example fails')
    t.match(use.stderr, /ERR_JOBCLIENT_NO_ADDON/, 'with ERR_JOBCLIENT_NO_ADDON')
    t.match(use.stderr, /No native build was found/, 'saying what is missing')
    t.match(use.stderr, /npm rebuild jobclient/, 'and which command builds it')
  })
})
