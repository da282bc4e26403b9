#!/usr/bin/env node
// Client overhead: acquire+release round trips through jobclient against raw syscalls from C,
// on the same jobserver, in one run. Prints one JSON object (median, p90, p99 in µs).
//
//   node packages/jobclient/bench/overhead.js [--iters N] [--path JOBSERVER]
//
// Default jobserver: a plain FIFO made here with one token (the floor: no server at all).
// With --path (e.g. a running steved's FUSE file) the same rows are measured against it.
// Rows:
//   c-poll-read-write    poll(POLLIN), read 1 byte, write it back: bench/c/rtbench.c "prt",
//                        the syscall pattern of make and of jobclient, with no runtime around it
//   c-read-write         read, write (a blocking client such as cargo): rtbench "rt"
//   jobclient-acquire    await client.acquire(); token.release()   (uv_poll, then read; write)
//   jobclient-try        client.tryAcquire(); token.release()      (read; write: no poll, no await)
// The C binary is bench/build/rtbench, built from bench/c/rtbench.c with gcc if missing.
'use strict'
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { JobClient } = require('../dist')

const ROOT = path.resolve(__dirname, '..', '..', '..')
const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : dflt
}
const iters = Number(opt('--iters', '20000'))
const warmup = Math.min(1000, Math.floor(iters / 10))

function rtbench() {
  const bin = path.join(ROOT, 'bench', 'build', 'rtbench')
  const src = path.join(ROOT, 'bench', 'c', 'rtbench.c')
  if (!fs.existsSync(bin) || fs.statSync(src).mtimeMs > fs.statSync(bin).mtimeMs) {
    fs.mkdirSync(path.dirname(bin), { recursive: true })
    const r = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-o', bin, src], { stdio: 'inherit' })
    if (r.status !== 0) throw new Error('building rtbench failed')
  }
  return bin
}

function stats(samplesNs) {
  const s = Float64Array.from(samplesNs).sort()
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))] / 1000
  const round = (x) => Math.round(x * 1000) / 1000
  return { ops: s.length, median_us: round(q(0.5)), p90_us: round(q(0.9)), p99_us: round(q(0.99)) }
}

async function measureJs(jobserver, kind) {
  const client = JobClient.open(jobserver, { handleSignals: false })
  const one =
    kind === 'acquire'
      ? async () => (await client.acquire()).release()
      : async () => {
          const t = client.tryAcquire()
          if (!t) throw new Error('no token: the pool must hold at least one')
          t.release()
        }
  for (let i = 0; i < warmup; i++) await one()
  const samples = new Array(iters)
  let t0 = process.hrtime.bigint()
  for (let i = 0; i < iters; i++) {
    await one()
    const t1 = process.hrtime.bigint()
    samples[i] = Number(t1 - t0)
    t0 = t1
  }
  client.close()
  return stats(samples)
}

function measureC(jobserver, mode) {
  const r = spawnSync(rtbench(), [mode, jobserver, '1', String(iters), String(warmup), '60'], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`rtbench ${mode} failed: ${r.stderr}`)
  const j = JSON.parse(r.stdout)
  return { ops: j.ops, median_us: j.median_us, p90_us: j.p90_us, p99_us: j.p99_us }
}

async function main() {
  let jobserver = opt('--path', undefined)
  let cleanup = () => {}
  if (!jobserver) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jobclient-bench-'))
    jobserver = path.join(dir, 'fifo')
    spawnSync('mkfifo', [jobserver])
    // Keep the FIFO's token alive between clients: a FIFO forgets its bytes on last close.
    const holder = fs.openSync(jobserver, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
    fs.writeSync(holder, '+')
    cleanup = () => {
      fs.closeSync(holder)
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
  try {
    const rows = {
      'c-poll-read-write': measureC(jobserver, 'prt'),
      'c-read-write': measureC(jobserver, 'rt'),
      'jobclient-acquire': await measureJs(jobserver, 'acquire'),
      'jobclient-try': await measureJs(jobserver, 'try'),
    }
    const out = {
      bench: 'jobclient client overhead: one acquire+release round trip',
      jobserver: opt('--path', undefined) ?? 'plain FIFO (made for this run)',
      node: process.version,
      cpus: os.cpus().length,
      iters,
      rows,
    }
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`)
  } finally {
    cleanup()
  }
}

main().catch((e) => {
  process.stderr.write(`overhead.js: ${e.stack}\n`)
  process.exit(1)
})
