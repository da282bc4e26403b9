// Admission against the real machine, not injected samples: a real steved on a FUSE file, real
// pressure stall information, load average and MemAvailable.
//
// Memory pressure comes from a hog in a memory-limited cgroup v1 (/sys/fs/cgroup/memory): it
// reads a file four times the size of its limit over and over, so its page cache is reclaimed
// and read again (refaults), which the kernel counts as memory stall. The hog is also put into
// a cgroup v2 directory when a cgroup2 hierarchy is mounted (here the hybrid
// /sys/fs/cgroup/unified), whose memory.pressure then is the hog's own: that is what
// --pressure-cgroup reads.
//
// No fixed timing thresholds: the limits are set from figures read in the same run, and the
// time to resume is compared with the recheck interval the test configures.
//
// Needs root, /dev/fuse, /proc/pressure and the cgroup v1 memory controller; fails when missing.

import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import t, { type Test } from 'tap'

import { run, start, type Started } from '../../../test/helpers/proc'
import { startSteved, type RunningSteved } from '../../../test/helpers/steved'

const CTL = path.join(__dirname, '..', 'bin', 'stevectl.js')
const CLIENT = path.join(__dirname, 'clients', 'jsclient.py')
const MEMCG_V1 = '/sys/fs/cgroup/memory'
const CGROUP2 = '/sys/fs/cgroup/unified'
/** How often steved re-samples while someone waits (-r), in seconds. */
const RECHECK = 1

const ctl = async (s: RunningSteved, ...args: string[]) => {
  const r = await run(process.execPath, [CTL, '--device', s.path, ...args], { timeoutMs: 20000 })
  if (r.code !== 0) throw new Error(`stevectl ${args.join(' ')}: exit ${r.code}: ${r.stderr}`)
  return r.stdout
}

interface Status {
  lastSample: { load1: number; memAvailMiB: number; pressure: { cpu: number | null; memory: number | null; io: number | null } | null; ageSeconds: number } | null
  waiters: Array<{ pid: number; reason: string }>
}
const status = async (s: RunningSteved): Promise<Status> => JSON.parse(await ctl(s, 'status', '--json'))

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function someAvg10(file: string): number {
  const m = /^some avg10=(\d+(?:\.\d+)?)/m.exec(fs.readFileSync(file, 'latin1'))
  if (!m) throw new Error(`${file}: no "some avg10="`)
  return Number(m[1])
}

/** Poll until `pred` holds; fails after `ms` (a deadline for a hung test, not a measured bound). */
async function until<T>(what: string, get: () => T | Promise<T>, pred: (v: T) => boolean, ms = 90_000, every = 100): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await get()
    if (pred(v)) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`)
    await sleep(every)
  }
}

function requireLive(): void {
  if (process.getuid?.() !== 0) throw new Error('this test needs root (cgroups, FUSE)')
  if (!fs.existsSync('/proc/pressure/memory')) throw new Error('this test needs pressure stall information (/proc/pressure, CONFIG_PSI)')
  if (!fs.existsSync(path.join(MEMCG_V1, 'memory.limit_in_bytes'))) throw new Error(`this test needs the cgroup v1 memory controller at ${MEMCG_V1}`)
}

/** A parked blocking reader; `got` resolves with the time its token came. */
async function waiter(t: Test, s: RunningSteved): Promise<{ proc: Started; got: Promise<number> }> {
  const proc = start(t, 'python3', [CLIENT, s.path, 'block'])
  await proc.waitFor(/^parking/m)
  const got = proc.waitFor(/^got b'\+'$/m, 600_000).then(() => Date.now())
  got.catch(() => {}) // awaited (or abandoned with the test) later
  return { proc, got }
}

/**
 * A memory hog: a v1 memory cgroup of `limitMiB`, also a cgroup v2 directory when there is a
 * cgroup2 hierarchy. Removed at the end, even when the test fails: its processes are killed first.
 */
function memoryHog(t: Test, limitMiB: number) {
  const name = `steved-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`
  const v1 = path.join(MEMCG_V1, name)
  const v2 = fs.existsSync(path.join(CGROUP2, 'cgroup.procs')) ? path.join(CGROUP2, name) : null
  const file = path.join(fs.mkdtempSync(path.join('/var/tmp', 'steved-hog-')), 'data')
  fs.mkdirSync(v1)
  if (v2) fs.mkdirSync(v2)
  fs.writeFileSync(path.join(v1, 'memory.limit_in_bytes'), String(limitMiB * 1024 * 1024))
  let procs: Started | null = null
  // Every process of the cgroup, the shell and its readers, until none is left: readers fork
  // a new cat all the time, so one pass is not enough.
  const kill = async () => {
    for (let i = 0; i < 100; i++) {
      const pids = fs.readFileSync(path.join(v1, 'cgroup.procs'), 'latin1').split('\n').filter(Boolean)
      if (pids.length === 0) break
      for (const p of pids) {
        try {
          process.kill(Number(p), 'SIGKILL')
        } catch {}
      }
      await sleep(20)
    }
    if (procs) await procs.exited
  }
  t.teardown(async () => {
    await kill()
    for (const dir of [v1, v2]) {
      if (dir && fs.existsSync(dir)) {
        for (let i = 0; i < 50; i++) {
          try {
            fs.rmdirSync(dir)
            break
          } catch {
            await sleep(100)
          }
        }
      }
    }
    fs.rmSync(path.dirname(file), { recursive: true, force: true })
  })
  return {
    v1,
    v2,
    /** Write the file (charged to the cgroup), then keep three readers going over it. */
    start(t: Test) {
      const join = `echo $$ > ${v1}/cgroup.procs${v2 ? ` && echo $$ > ${v2}/cgroup.procs` : ''}`
      const script = `${join} && dd if=/dev/zero of=${file} bs=1M count=${limitMiB * 4} status=none && echo ready && for k in 1 2 3; do (while :; do cat ${file}; done) > /dev/null 2>&1 & done; wait`
      procs = start(t, 'sh', ['-c', script])
      return procs.waitFor(/^ready$/m, 120_000)
    },
    kill,
  }
}

t.test('memory pressure from a hog in a memory-limited cgroup stops grants; when it is gone they resume', async (t) => {
  requireLive()
  const PSI = '/proc/pressure/memory'
  const base = someAvg10(PSI)
  // Above what the machine shows now, well below what the hog makes (measured: 15-20 % here).
  const limit = Math.round((base + 5) * 100) / 100
  t.comment(`memory pressure before: ${base} %, limit ${limit} %`)

  const s = await startSteved(t, { jobs: 2, args: ['-m', '0', '-r', String(RECHECK)] })
  await ctl(s, '--set-max-memory-pressure', String(limit))
  t.equal((await ctl(s, '--get-max-memory-pressure')).trim(), String(limit), 'the limit reads back')

  // Baseline: before the hog, a reader is served at once.
  const first = await waiter(t, s)
  await first.got
  t.pass('before the hog: granted')
  first.proc.child.kill('SIGKILL')
  await first.proc.exited

  const hog = memoryHog(t, 32)
  await hog.start(t)
  const high = await until('memory pressure above the limit', () => someAvg10(PSI), (v) => v > limit + 2)
  t.comment(`memory pressure with the hog: ${high} %`)

  const w = await waiter(t, s)
  const st = await until('the waiter to say why', () => status(s), (x) => x.waiters.length === 1 && x.waiters[0].reason === 'pressure:memory', 30_000, 200)
  t.ok(st.lastSample?.pressure?.memory !== null && st.lastSample!.pressure!.memory! > limit, `steved read ${st.lastSample?.pressure?.memory} % > ${limit} %`)
  t.equal(st.lastSample?.pressure?.cpu, null, 'resources without a limit are not read')
  const text = await ctl(s, 'status')
  t.match(text, /pressure:memory/, 'stevectl status names the reason')
  t.match(text, /^pressure \(PSI some avg10\): cpu no limit, memory <= [\d.]+% \(now [\d.]+%\), io no limit$/m, 'and the limit with the figure it was held back on')

  // Several rechecks while the pressure stays high: still waiting.
  const stillHighUntil = Date.now() + 4 * RECHECK * 1000
  let highThroughout = true
  while (Date.now() < stillHighUntil) {
    if (someAvg10(PSI) <= limit) highThroughout = false
    await sleep(100)
  }
  const early = await Promise.race([w.got.then(() => true), sleep(0).then(() => false)])
  if (highThroughout) t.notOk(early, `no grant over ${4 * RECHECK} s of rechecks while the pressure stayed above the limit`)
  else t.comment('pressure dipped below the limit during the hold check: not asserted')

  const killedAt = Date.now()
  await hog.kill()
  // When the kernel's figure (updated every 2 s) falls to the limit, steved should see it at its
  // next recheck.
  const below = await until('memory pressure to fall to the limit', () => someAvg10(PSI), (v) => v <= limit, 180_000, 50)
  const belowAt = Date.now()
  const grantedAt = await w.got
  const after = await status(s)
  t.ok(after.lastSample!.pressure!.memory! <= limit, `granted on a sample at the limit or below (${after.lastSample!.pressure!.memory} %)`)
  t.ok(grantedAt >= killedAt, 'not granted before the hog was gone')
  const lag = grantedAt - belowAt
  t.comment(`hog killed -> pressure ${below} % <= ${limit} % after ${belowAt - killedAt} ms; granted ${lag} ms after that (recheck ${RECHECK * 1000} ms)`)
  // The recheck timer, not luck: at most one recheck (plus the test's own 50 ms poll and
  // scheduling on a loaded machine, bounded by a second recheck) after the figure fell.
  t.ok(lag <= 2 * RECHECK * 1000, `resumed within two recheck intervals of the pressure falling (${lag} ms)`)

  // Nobody waits now: nothing is read any more, so the last sample only ages.
  await sleep(3 * RECHECK * 1000)
  const idle = await status(s)
  t.ok(idle.lastSample!.ageSeconds >= 2 * RECHECK, `idle: no sample taken for ${idle.lastSample!.ageSeconds} s (recheck ${RECHECK} s)`)
})

t.test('--pressure-cgroup reads that cgroup v2 directory: pressure elsewhere does not block, pressure there does', async (t) => {
  requireLive()
  if (!fs.existsSync(path.join(CGROUP2, 'cgroup.procs'))) {
    t.fail(`no cgroup2 hierarchy at ${CGROUP2}: the cgroup path cannot be tested for real here`)
    return
  }
  const hog = memoryHog(t, 32)
  // A quiet sibling: no tasks, so its memory pressure stays 0 whatever the hog does.
  const quiet = path.join(CGROUP2, `steved-quiet-${process.pid}`)
  fs.mkdirSync(quiet)
  t.teardown(() => fs.rmdirSync(quiet))
  const base = someAvg10(path.join(hog.v2!, 'memory.pressure'))
  const limit = Math.round((base + 5) * 100) / 100

  const calm = await startSteved(t, { jobs: 2, args: ['-m', '0', '-r', String(RECHECK), '--pressure-cgroup', quiet, '--max-memory-pressure', String(limit)] })
  const busy = await startSteved(t, { jobs: 2, args: ['-m', '0', '-r', String(RECHECK), '--pressure-cgroup', hog.v2!, '--max-memory-pressure', String(limit)] })

  await hog.start(t)
  const high = await until('the hog cgroup memory pressure above the limit', () => someAvg10(path.join(hog.v2!, 'memory.pressure')), (v) => v > limit + 2)
  t.comment(`hog cgroup memory pressure ${high} %; machine ${someAvg10('/proc/pressure/memory')} %`)

  const wCalm = await waiter(t, calm)
  await wCalm.got
  const sc = await status(calm)
  t.equal(sc.lastSample?.pressure?.memory, 0, 'the quiet cgroup reads 0: granted while the machine is under pressure')

  const wBusy = await waiter(t, busy)
  const sb = await until('the waiter on the hog cgroup to say why', () => status(busy), (x) => x.waiters.length === 1 && x.waiters[0].reason === 'pressure:memory', 30_000, 200)
  t.ok(sb.lastSample!.pressure!.memory! > limit, `steved read the hog cgroup's ${sb.lastSample!.pressure!.memory} %`)

  await hog.kill()
  await wBusy.got
  const after = await status(busy)
  t.ok(after.lastSample!.pressure!.memory! <= limit, `granted once the cgroup's pressure fell (${after.lastSample!.pressure!.memory} %)`)
})

t.test('load average: -l below the load measured now stops grants; raised at runtime, the waiter is served at once', async (t) => {
  requireLive()
  // The limit must sit well below the real 1-minute load: on a quiet machine make load first.
  const burners: Started[] = []
  if (os.loadavg()[0] < 2) {
    for (let i = 0; i < os.availableParallelism() * 2; i++) burners.push(start(t, process.execPath, ['-e', 'for (;;) {}']))
    await until('the 1-minute load to reach 2', () => os.loadavg()[0], (v) => v >= 2, 300_000, 1000)
  }
  const load = os.loadavg()[0]
  const limit = Math.round((load / 2) * 100) / 100
  t.comment(`1-minute load ${load}, limit ${limit}`)
  const s = await startSteved(t, { jobs: 2, args: ['-m', '0', '-r', String(RECHECK), '-l', String(limit)] })
  const w = await waiter(t, s)
  const st = await until('the waiter to say why', () => status(s), (x) => x.waiters.length === 1 && x.waiters[0].reason === 'load', 30_000, 200)
  t.ok(st.lastSample!.load1 > limit, `steved read load ${st.lastSample!.load1} > ${limit}`)
  t.equal(st.lastSample!.pressure, null, 'no pressure limit: pressure is not read')

  const raised = Math.ceil(Math.max(load, st.lastSample!.load1) * 4 + 10)
  const setAt = Date.now()
  await ctl(s, '--set-load-average', String(raised))
  const grantedAt = await w.got
  t.pass(`granted after -l was raised to ${raised} (${grantedAt - setAt} ms)`)
  for (const b of burners) b.child.kill('SIGKILL')
})

t.test('MemAvailable: -a above what the machine has stops grants; lowered at runtime, the waiter is served at once', async (t) => {
  requireLive()
  const avail = () => Number(/^MemAvailable:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'latin1'))![1]) / 1024
  const now = avail()
  const floor = Math.ceil(now * 2)
  t.comment(`MemAvailable ${Math.round(now)} MiB, floor ${floor} MiB`)
  const s = await startSteved(t, { jobs: 2, args: ['-r', String(RECHECK), '-a', String(floor)] })
  const w = await waiter(t, s)
  const st = await until('the waiter to say why', () => status(s), (x) => x.waiters.length === 1 && x.waiters[0].reason === 'memory', 30_000, 200)
  t.ok(st.lastSample!.memAvailMiB < floor, `steved read ${st.lastSample!.memAvailMiB} MiB < ${floor} MiB`)
  // min-jobs does not lift the memory floor: even the first token waits.
  await ctl(s, '--set-min-memory-avail', String(Math.floor(avail() / 2)))
  await w.got
  t.pass('granted once the floor was lowered below MemAvailable')
})

t.test('CPU pressure: a limit below what is measured now stops grants; raised at runtime, the waiter is served', async (t) => {
  requireLive()
  const PSI = '/proc/pressure/cpu'
  const burners: Started[] = []
  if (someAvg10(PSI) < 20) {
    for (let i = 0; i < os.availableParallelism() * 2; i++) burners.push(start(t, process.execPath, ['-e', 'for (;;) {}']))
    await until('CPU pressure to reach 20 %', () => someAvg10(PSI), (v) => v >= 20, 120_000, 500)
  }
  const cpu = someAvg10(PSI)
  const limit = Math.round((cpu / 4) * 100) / 100
  t.comment(`CPU pressure ${cpu} %, limit ${limit} %`)
  const s = await startSteved(t, { jobs: 2, args: ['-m', '0', '-r', String(RECHECK), '--max-cpu-pressure', String(limit)] })
  const w = await waiter(t, s)
  const st = await until('the waiter to say why', () => status(s), (x) => x.waiters.length === 1 && x.waiters[0].reason === 'pressure:cpu', 30_000, 200)
  t.ok(st.lastSample!.pressure!.cpu! > limit, `steved read ${st.lastSample!.pressure!.cpu} % > ${limit} %`)
  await ctl(s, '--set-max-cpu-pressure', 'none')
  await w.got
  t.pass('granted once the limit was lifted (none)')
  for (const b of burners) b.child.kill('SIGKILL')
})
