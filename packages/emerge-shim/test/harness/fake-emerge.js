#!/usr/bin/env node
// A stand-in for emerge in the emerge-shim tests: `node fake-emerge.js PLAN.json` builds every
// job of the plan at once (emerge --jobs with enough jobs), each as Portage's EbuildBuild does:
//   setup, unpack, prepare, configure, compile, test, install   each a new `bash ebuild.sh PHASE`
//   misc-functions.sh install_qa_check install_symlink_html_docs install_hooks   (EBUILD_PHASE unset)
//   preinst, postinst                                           (the merge: no token)
// and after a failed phase `misc-functions.sh die_hooks`, then nothing more for that job.
// Each process gets the variables doebuild sets (lib/portage/package/ebuild/doebuild.py) plus
// the plan's make.conf-like `env` and the job's package.env-like `env`. Its stdout and stderr
// go through a pipe into ${T}/build.log, and the phase counts as done when that pipe closes,
// as with Portage's log pipe: a process that keeps the pipe open keeps the job waiting.
//
// With "nativeToken": true it also does what Portage >= 3.0.74 does with
// FEATURES=jobserver-token: take a token (poll, then a non-blocking read, through jobclient)
// before a job starts and write it back after the post-install checks (or the die hooks).
//
// A job may name `gates`: {PHASE: FILE}, to wait until FILE exists before starting PHASE
// (how a test stops emerge between two phases, or starts a job later than the others).
//
// Events on stdout, one JSON object per line: {"ev":"phase","job","phase","pid"},
// {"ev":"phase-end","job","phase","status"}, {"ev":"token","job"}, {"ev":"end","job","ok"},
// {"ev":"done"}. Written for these tests; no Portage code is copied.
'use strict'
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const PHASES = ['setup', 'unpack', 'prepare', 'configure', 'compile', 'test', 'install']
const PHASE_FUNC = { setup: 'pkg_setup', unpack: 'src_unpack', prepare: 'src_prepare', configure: 'src_configure', compile: 'src_compile', test: 'src_test', install: 'src_install', preinst: 'pkg_preinst', postinst: 'pkg_postinst' }

const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
const emit = (o) => process.stdout.write(`${JSON.stringify(o)}\n`)

function splitPf(pf) {
  const m = /^(.+)-(\d[^-]*)(?:-(r\d+))?$/.exec(pf)
  if (!m) throw new Error(`not a PF: ${pf}`)
  return { pn: m[1], pv: m[2], pr: m[3] ?? 'r0', p: `${m[1]}-${m[2]}`, pvr: m[3] ? `${m[2]}-${m[3]}` : m[2] }
}

function jobEnv(job) {
  const { pn, pv, pr, p, pvr } = splitPf(job.pf)
  const builddir = path.join(plan.tmpdir, 'portage', job.category, job.pf)
  const workdir = path.join(builddir, 'work')
  return {
    ...plan.env,
    CATEGORY: job.category,
    PF: job.pf,
    P: p,
    PN: pn,
    PV: pv,
    PR: pr,
    PVR: pvr,
    PORTAGE_TMPDIR: plan.tmpdir,
    PORTAGE_BUILDDIR: builddir,
    PORTAGE_BUILDDIR_LOCKED: '1',
    T: path.join(builddir, 'temp'),
    TMPDIR: path.join(builddir, 'temp'),
    HOME: path.join(builddir, 'homedir'),
    WORKDIR: workdir,
    S: path.join(workdir, p),
    D: path.join(builddir, 'image') + '/',
    EBUILD: job.ebuild,
    EMERGE_FROM: 'ebuild',
    EAPI: '8',
    PORTAGE_LOG_FILE: path.join(builddir, 'temp', 'build.log'),
    ...(job.env ?? {}),
  }
}

// Run one process of the job; resolves with its exit status once its output pipe has closed.
function runStep(job, env, script, args, what) {
  return new Promise((resolve) => {
    const log = fs.openSync(env.PORTAGE_LOG_FILE, 'a')
    const child = spawn('bash', [path.join(plan.harness, script), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    emit({ ev: 'phase', job: job.pf, phase: what, pid: child.pid })
    const write = (d) => fs.writeSync(log, d)
    child.stdout.on('data', write)
    child.stderr.on('data', write)
    child.on('close', (code, signal) => {
      fs.closeSync(log)
      const status = code ?? 128
      emit({ ev: 'phase-end', job: job.pf, phase: what, status, signal })
      resolve(status)
    })
  })
}

async function gate(file) {
  while (!fs.existsSync(file)) await new Promise((r) => setTimeout(r, 50))
}

async function build(job, client) {
  const base = jobEnv(job)
  for (const d of [base.T, base.HOME, base.S, base.D]) fs.mkdirSync(d, { recursive: true })
  for (const [name, text] of Object.entries(job.files ?? {})) fs.writeFileSync(path.join(base.S, name), text)
  if (job.gates?.setup) await gate(job.gates.setup)
  let token = null
  if (client) {
    token = await client.acquire()
    emit({ ev: 'token', job: job.pf })
  }
  let ok = true
  for (const phase of PHASES) {
    if (phase !== 'setup' && job.gates?.[phase]) await gate(job.gates[phase])
    const env = { ...base, EBUILD_PHASE: phase, EBUILD_PHASE_FUNC: PHASE_FUNC[phase] }
    if ((await runStep(job, env, 'ebuild.sh', [phase], phase)) !== 0) {
      ok = false
      break
    }
  }
  const misc = (args) => {
    const env = { ...base, EBUILD_PHASE_FUNC: 'src_install', MISC_FUNCTIONS_ARGS: args.join(' ') }
    return runStep(job, env, 'misc-functions.sh', args, args[0])
  }
  if (ok && (await misc(['install_qa_check', 'install_symlink_html_docs', 'install_hooks'])) !== 0) ok = false
  if (!ok) await misc(['die_hooks'])
  if (token) token.release()
  if (ok) {
    for (const phase of ['preinst', 'postinst']) {
      await runStep(job, { ...base, EBUILD_PHASE: phase, EBUILD_PHASE_FUNC: PHASE_FUNC[phase] }, 'ebuild.sh', [phase], phase)
    }
  }
  emit({ ev: 'end', job: job.pf, ok })
}

async function main() {
  let client = null
  if (plan.nativeToken) {
    const { JobClient } = require(plan.jobclient)
    client = JobClient.open(plan.jobserver, { handleSignals: false })
  }
  await Promise.all(plan.jobs.map((job) => build(job, client)))
  client?.close()
  emit({ ev: 'done' })
}

main().catch((e) => {
  process.stderr.write(`fake-emerge: ${e.stack}\n`)
  process.exitCode = 1
})
