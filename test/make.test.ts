// Real GNU make 4.4.1 builds sharing one steved pool. Every recipe records its start and end
// time; the concurrency is computed from those records, not from steved's own counters.

import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { maxOverlap, parseJobLog } from './helpers/joblog'
import { run, start } from './helpers/proc'
import { MAKE44, startSteved, tmpDir, waitForStatus } from './helpers/steved'

/** A Makefile with `n` independent jobs, each sleeping `ms` and logging start/end. */
function writeMakefile(dir: string, name: string, n: number, ms: number, log: string): string {
  const file = path.join(dir, `${name}.mk`)
  const targets = Array.from({ length: n }, (_, i) => `${name}-${i}`)
  fs.writeFileSync(
    file,
    `all: ${targets.join(' ')}\n` +
      `.PHONY: all ${targets.join(' ')}\n` +
      `${targets.join(' ')}:\n` +
      `\t@echo "start $@ $$(date +%s%N)" >> ${log}; sleep ${ms / 1000}; echo "end $@ $$(date +%s%N)" >> ${log}\n`,
  )
  return file
}

t.test('make 4.4 is the make these tests use', async (t) => {
  const r = await run(MAKE44, ['--version'])
  t.match(r.stdout, /^GNU Make 4\.(4|[5-9])/)
})

t.test('three concurrent makes under steved -j 3 never run more than 3 jobs plus one implicit slot each', async (t) => {
  const dir = tmpDir(t)
  const s = await startSteved(t, { jobs: 3, dir })
  const log = path.join(dir, 'jobs.log')
  const builds = ['a', 'b', 'c'].map((name) => writeMakefile(dir, name, 10, 150, log))
  const env = { ...process.env, MAKEFLAGS: s.makeflags }
  const results = await Promise.all(builds.map((mk) => run(MAKE44, ['-f', mk], { env, cwd: dir, timeoutMs: 120000 })))
  for (const r of results) t.equal(r.code, 0, `make exited 0 ${r.stderr}`)
  for (const r of results) t.notMatch(r.stderr, /jobserver unavailable|warning/, 'make used the jobserver without complaint')

  const jobs = parseJobLog(fs.readFileSync(log, 'utf8'))
  t.equal(jobs.length, 30, 'every job ran once')
  const peak = maxOverlap(jobs)
  t.ok(peak <= 3 + 3, `peak concurrency ${peak} <= 3 tokens + 3 implicit slots`)
  t.ok(peak > 3, `peak concurrency ${peak} > 3: the makes really ran in parallel through the pool`)
  for (const name of ['a', 'b', 'c']) {
    const own = maxOverlap(jobs.filter((j) => j.name.startsWith(`${name}-`)))
    t.ok(own >= 2, `make ${name} ran up to ${own} jobs at once: it took tokens`)
  }
  const rep = await waitForStatus(s, (r) => r.pool.free === 3, 'all tokens back')
  const c = rep.counters
  t.ok(c.granted >= 3, `steved granted ${c.granted} tokens`)
  t.equal(c.reclaimed, 0, 'make returned every token itself')
})

t.test('a make killed mid-build leaks nothing: its tokens are reclaimed', async (t) => {
  const dir = tmpDir(t)
  const s = await startSteved(t, { jobs: 4, dir })
  const log = path.join(dir, 'jobs.log')
  const mk = writeMakefile(dir, 'k', 8, 5000, log)
  const make = start(t, MAKE44, ['-f', mk], { env: { ...process.env, MAKEFLAGS: s.makeflags }, cwd: dir, detached: true })
  await waitForStatus(s, (r) => r.pool.free === 0, 'make to take all tokens')
  // Kill make and its recipes (make 4.4.1 does not return tokens on a fatal signal).
  process.kill(-make.pid, 'SIGKILL')
  const rep = await waitForStatus(s, (r) => r.pool.free === 4, 'tokens reclaimed')
  t.ok(rep.counters.reclaimed >= 4, 'reclaimed from the killed processes')
})

t.test("Debian's make 4.3 cannot use a fifo: jobserver (documented in the README)", async (t) => {
  const dir = tmpDir(t)
  const s = await startSteved(t, { jobs: 2, dir })
  fs.writeFileSync(path.join(dir, 'Makefile'), 'all:\n\t@true\n')
  const r = await run('/usr/bin/make', ['-C', dir], { env: { ...process.env, MAKEFLAGS: s.makeflags } })
  const version = (await run('/usr/bin/make', ['--version'])).stdout.split('\n')[0]
  t.match(version, /GNU Make 4\.3/, 'this is make 4.3')
  t.not(r.code, 0, 'make 4.3 fails')
  t.match(r.stderr, /invalid --jobserver-auth string 'fifo:/)
})
