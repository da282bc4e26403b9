// Kill storm (issue 10): hundreds of real client processes of mixed kinds (blocking readers,
// pollers, multi-threaded readers, greedy multi-token takers, leakers and real GNU make 4.4
// builds) against one `steved -j 8` on a FUSE file, killed at random with SIGKILL, SIGINT and
// SIGSTOP/SIGCONT while new ones start. Afterwards every token is back, nobody waits, the
// SIGUSR1 report is empty, every token granted came back by a write or a reclaim, and steved
// is back to its baseline:
//   - descriptors (/proc/PID/fd): exactly the baseline count (a pidfd per live client; none left);
//   - live JS heap after a full GC (a heap snapshot on SIGUSR2 forces one), compiled code left
//     out: at most 32 KiB + 32 bytes per client above the baseline. Garbage does not count
//     here, only what steved still holds: a leak of a Map entry per client (~190 bytes, tried
//     by breaking ThreadMap.forget) fails it, while a healthy run ends within a few KiB.
//     Compiled code grows as more of steved gets optimized and is printed but not bounded;
//   - RSS (/proc/PID/status VmRSS, read right after each snapshot): within RSS_SLACK (32 MiB)
//     of the baseline. RSS includes V8's free but unreturned pages and malloc arenas, which
//     move by megabytes with allocation timing (healthy runs end 4-9 MiB up), so this bound
//     only catches gross leaks, native ones included; the heap check is the precise one.
// The baseline is taken after a warm-up storm of the same kind (JIT, heap and maps grown),
// once every warm-up client is gone.
//
// Bounded by default (8 s of warm-up, 40 s of storm, about 55 s in all). The soak:
//   STEVED_SOAK_SECONDS=600 bash scripts/test.sh test/killstorm.test.ts

import { spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'

import { MAKE44, startSteved, tmpDir, waitForStatus, type RunningSteved, poolWhole } from './helpers/steved'
import type { Status } from 'jobclient'

const STORM = path.join(__dirname, 'clients', 'storm.py')
const JOBS = 8
const STORM_SECONDS = Number(process.env.STEVED_SOAK_SECONDS ?? 40)
const WARMUP_SECONDS = 8
/** Live clients kept running at once. */
const LIVE = 12
/** Live JS data (compiled code not counted) may end this much above the baseline. */
const heapSlack = (clients: number): number => (32 << 10) + 32 * clients
const RSS_SLACK = 32 << 20 // 32 MiB of RSS

type Kind = 'blocking' | 'poller' | 'threads' | 'greedy' | 'leaker' | 'make'
const KINDS: Array<[Kind, number]> = [
  ['blocking', 4],
  ['poller', 4],
  ['threads', 2],
  ['greedy', 1],
  ['leaker', 1],
  ['make', 3],
]

interface Client {
  kind: Kind
  child: ChildProcess
  pid: number
  stopped: boolean
  /** Sent SIGKILL or SIGINT. */
  struck: boolean
  exited: Promise<void>
  done: boolean
}

/** A small seeded generator, so a failing storm can be re-run with STORM_SEED. */
function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let x = Math.imul(s ^ (s >>> 15), 1 | s)
    x ^= x + Math.imul(x ^ (x >>> 7), 61 | x)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

class Storm {
  readonly clients = new Set<Client>()
  readonly started: Record<string, number> = {}
  readonly kills: Record<string, number> = { SIGKILL: 0, SIGINT: 0, SIGSTOP: 0 }
  /** Clients that ended their lifetime (or, for make, finished the build) unharmed. */
  exitedOnTheirOwn = 0
  private ending = false
  private readonly timers = new Set<NodeJS.Timeout>()
  private readonly rand: () => number
  private n = 0

  constructor(
    private readonly s: RunningSteved,
    private readonly dir: string,
    seed: number,
  ) {
    this.rand = rng(seed)
    fs.writeFileSync(
      path.join(dir, 'Makefile'),
      // Twelve short jobs; make reads tokens through its poll-then-read loop.
      'J := $(addprefix j,1 2 3 4 5 6 7 8 9 10 11 12)\nall: $(J)\n$(J):\n\t@sleep 0.0$$(( $$$$ % 9 + 1 ))\n.PHONY: all $(J)\n',
    )
  }

  private pick<T>(weighted: Array<[T, number]>): T {
    const total = weighted.reduce((a, [, w]) => a + w, 0)
    let r = this.rand() * total
    for (const [v, w] of weighted) if ((r -= w) < 0) return v
    return weighted[weighted.length - 1][0]
  }

  spawnOne(): void {
    const kind = this.pick(KINDS)
    const lifetime = (0.3 + this.rand() * 4).toFixed(2)
    const seed = String(++this.n)
    // Every client leads its own process group, so SIGINT reaches make's recipes as from a
    // terminal and teardown can kill whatever a killed make left behind.
    const child =
      kind === 'make'
        ? spawn(MAKE44, ['-s', '-C', this.dir], { env: { ...process.env, MAKEFLAGS: this.s.makeflags }, stdio: 'ignore', detached: true })
        : spawn('python3', [STORM, this.s.path, kind, lifetime, seed], { stdio: ['ignore', 'ignore', 'pipe'], detached: true })
    child.stderr?.resume()
    const c: Client = { kind, child, pid: child.pid!, stopped: false, struck: false, done: false, exited: Promise.resolve() }
    c.exited = new Promise((resolve) =>
      child.once('exit', () => {
        c.done = true
        this.clients.delete(c)
        if (!c.struck && !this.ending) this.exitedOnTheirOwn++
        resolve()
      }),
    )
    this.clients.add(c)
    this.started[kind] = (this.started[kind] ?? 0) + 1
  }

  private signal(c: Client, sig: NodeJS.Signals, group = false): void {
    try {
      process.kill(group ? -c.pid : c.pid, sig)
    } catch {
      /* it just exited */
    }
  }

  /** One random act of violence. */
  strike(): void {
    const live = [...this.clients].filter((c) => !c.done && !c.stopped)
    if (!live.length) return
    const c = live[Math.floor(this.rand() * live.length)]
    const act = this.pick<NodeJS.Signals>([
      ['SIGKILL', 4],
      ['SIGINT', 3],
      ['SIGSTOP', 3],
    ])
    this.kills[act]++
    if (act !== 'SIGSTOP') c.struck = true
    if (act === 'SIGKILL') this.signal(c, 'SIGKILL') // the process alone, like the OOM killer
    else if (act === 'SIGINT') this.signal(c, 'SIGINT', true) // the group, like ^C
    else {
      c.stopped = true
      this.signal(c, 'SIGSTOP', true)
      const timer = setTimeout(() => {
        this.timers.delete(timer)
        c.stopped = false
        this.signal(c, 'SIGCONT', true)
      }, 50 + this.rand() * 700)
      this.timers.add(timer)
    }
  }

  async run(seconds: number, onTick?: () => void): Promise<void> {
    const until = Date.now() + seconds * 1000
    while (Date.now() < until) {
      while (this.clients.size < LIVE) this.spawnOne()
      if (this.rand() < 0.75) this.strike()
      onTick?.()
      await new Promise((r) => setTimeout(r, 100))
    }
  }

  /** Stop everything: continue the stopped, kill every client and its group, wait for all. */
  async end(): Promise<void> {
    this.ending = true
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
    const all = [...this.clients]
    for (const c of all) {
      this.signal(c, 'SIGCONT', true)
      this.signal(c, 'SIGKILL', true)
    }
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.all(all.map((c) => c.exited)),
      new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('clients did not die within 20 s')), 20000))),
    ])
    clearTimeout(timer)
  }

  get total(): number {
    return Object.values(this.started).reduce((a, b) => a + b, 0)
  }
}

const mib = (b: number): string => (b / 2 ** 20).toFixed(2)
const kib = (b: number): string => `${b >= 0 ? '+' : ''}${(b / 1024).toFixed(0)}`

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length
}

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!m) throw new Error(`no VmRSS for ${pid}`)
  return Number(m[1]) * 1024
}

/**
 * Write a heap snapshot (V8 runs a full GC first) and sum the self sizes of what is live:
 * `data` is everything but compiled code, `code` is V8's code objects (they grow as more of
 * steved gets optimized, which is not a leak).
 */
async function liveHeap(pid: number, dir: string): Promise<{ data: number; code: number }> {
  // Twice: objects freed by the first GC may keep native wrappers (a watched process's FdPoll
  // and its callback) alive through global handles until their finalizers have run.
  await heapSnapshot(pid, dir)
  return heapSnapshot(pid, dir)
}

async function heapSnapshot(pid: number, dir: string): Promise<{ data: number; code: number }> {
  const before = new Set(fs.readdirSync(dir))
  process.kill(pid, 'SIGUSR2')
  const until = Date.now() + 30000
  for (;;) {
    const fresh = fs.readdirSync(dir).filter((f) => !before.has(f) && f.endsWith('.heapsnapshot'))
    if (fresh.length) {
      const file = path.join(dir, fresh[0])
      // Written in one go by the main thread; wait until it parses.
      try {
        const snap = JSON.parse(fs.readFileSync(file, 'utf8')) as {
          snapshot: { meta: { node_fields: string[]; node_types: [string[]] } }
          nodes: number[]
        }
        const fields = snap.snapshot.meta.node_fields
        const self = fields.indexOf('self_size')
        const type = fields.indexOf('type')
        const code = snap.snapshot.meta.node_types[0].indexOf('code')
        const sum = { data: 0, code: 0 }
        for (let i = 0; i < snap.nodes.length; i += fields.length) {
          if (snap.nodes[i + type] === code) sum.code += snap.nodes[i + self]
          else sum.data += snap.nodes[i + self]
        }
        fs.rmSync(file)
        return sum
      } catch {
        /* not complete yet */
      }
    }
    if (Date.now() > until) throw new Error('steved wrote no heap snapshot within 30 s')
    await new Promise((r) => setTimeout(r, 100))
  }
}

const whole = (r: Status): boolean => r.pool.jobs === JOBS && poolWhole(r)

async function settle(t: Test, s: RunningSteved, storm: Storm, what: string): Promise<Status> {
  await storm.end()
  const r = await waitForStatus(s, whole, `${what}: every token back, nobody waiting`, 20000)
  // steved closes a pidfd when it sees the exit; give the last ones a bounded moment.
  const until = Date.now() + 10000
  while (s.child.exitCode === null && Date.now() < until && (await pidfdsOpen(s.pid)) > 0) await new Promise((res) => setTimeout(res, 50))
  t.equal(await pidfdsOpen(s.pid), 0, `${what}: steved watches no process any more`)
  return r
}

/** pidfds steved holds (anon_inode:[pidfd]). */
async function pidfdsOpen(pid: number): Promise<number> {
  let n = 0
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[pidfd]') n++
    } catch {
      /* closed meanwhile */
    }
  }
  return n
}

// The file's own time limit (tap's default is 300 s): the storm, its warm-up and a margin.
t.setTimeout(Math.max(300, WARMUP_SECONDS + STORM_SECONDS + 180) * 1000)

t.test(`kill storm: ${STORM_SECONDS} s of random SIGKILL, SIGINT and SIGSTOP against steved -j ${JOBS}`, async (t) => {
  const dir = tmpDir(t)
  const snaps = path.join(dir, 'snapshots')
  fs.mkdirSync(snaps)
  const s = await startSteved(t, {
    jobs: JOBS,
    dir,
    env: { NODE_OPTIONS: `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${snaps}` },
  })
  const seed = Number(process.env.STORM_SEED ?? Date.now() % 100000)
  t.comment(`seed ${seed} (STORM_SEED=${seed} repeats the same choices)`)
  const storms: Storm[] = []
  t.teardown(async () => {
    for (const st of storms) await st.end().catch(() => undefined)
  })

  // Warm-up, then the baseline.
  const warm = new Storm(s, dir, seed)
  storms.push(warm)
  await warm.run(WARMUP_SECONDS)
  await settle(t, s, warm, 'after the warm-up')
  // RSS is read right after a heap snapshot both times: the snapshot itself grows it.
  const baseHeap = await liveHeap(s.pid, snaps)
  const base = { fds: fdCount(s.pid), rss: rssBytes(s.pid), heap: baseHeap }
  const c0 = (await s.status()).counters
  t.comment(`baseline: ${base.fds} fds, RSS ${mib(base.rss)} MiB, live heap ${mib(base.heap.data)} MiB data + ${mib(base.heap.code)} MiB code`)

  // The storm.
  const storm = new Storm(s, dir, seed + 1)
  storms.push(storm)
  let peakFds = base.fds
  let peakRss = base.rss
  await storm.run(STORM_SECONDS, () => {
    peakFds = Math.max(peakFds, fdCount(s.pid))
    peakRss = Math.max(peakRss, rssBytes(s.pid))
  })
  const during = await s.status()
  t.ok(during.pool.free <= JOBS, 'never more free than jobs')
  const rep = await settle(t, s, storm, 'after the storm')

  const c = rep.counters
  const granted = c.granted - c0.granted
  const returned = c.returned - c0.returned
  const reclaimed = c.reclaimed - c0.reclaimed
  t.comment(`clients: ${storm.total} (${Object.entries(storm.started).map(([k, v]) => `${v} ${k}`).join(', ')}); ${storm.exitedOnTheirOwn} ended unharmed, the rest were killed`)
  t.comment(`kills: ${storm.kills.SIGKILL} SIGKILL, ${storm.kills.SIGINT} SIGINT, ${storm.kills.SIGSTOP} SIGSTOP+SIGCONT`)
  t.comment(`tokens: ${granted} granted, ${returned} returned, ${reclaimed} reclaimed from dead processes; ${c.interrupts - c0.interrupts} reads interrupted`)
  t.ok(storm.total >= (STORM_SECONDS >= 40 ? 200 : 5 * STORM_SECONDS), `${storm.total} client processes took part`)
  t.ok(storm.started.make >= 10, `${storm.started.make} real make 4.4 builds among them`)
  t.ok(reclaimed > 0, 'tokens were reclaimed from killed holders')
  t.equal(granted, returned + reclaimed, 'every token granted came back, by a write or a reclaim')
  t.match(await s.report(), /holders: none\nwaiters: none\nreservations: none/, 'the SIGUSR1 report is empty')

  const afterHeap = await liveHeap(s.pid, snaps)
  const after = { fds: fdCount(s.pid), rss: rssBytes(s.pid), heap: afterHeap }
  t.comment(
    `after: ${after.fds} fds (peak ${peakFds}), RSS ${mib(after.rss)} MiB (peak ${mib(peakRss)}), ` +
      `live heap ${mib(after.heap.data)} MiB data (${kib(after.heap.data - base.heap.data)} KiB) + ${mib(after.heap.code)} MiB code (${kib(after.heap.code - base.heap.code)} KiB)`,
  )
  t.equal(after.fds, base.fds, `steved's descriptors back to the baseline (${base.fds})`)
  const slack = heapSlack(storm.total)
  t.ok(after.heap.data <= base.heap.data + slack, `live JS data within ${(slack / 1024).toFixed(0)} KiB of the baseline (32 KiB + 32 bytes per client)`)
  t.ok(after.rss <= base.rss + RSS_SLACK, `RSS within ${RSS_SLACK >> 20} MiB of the baseline`)
  t.equal(s.child.exitCode, null, 'steved is still running')
})
