// Metrics for Prometheus: a live steved on a FUSE file scraped over HTTP (--metrics) and through
// `stevectl metrics --textfile`, each exposition parsed by prometheus-client's own parsers
// (OpenMetrics 1.0 and text 0.0.4), and its values checked against `stevectl status --json`
// taken at the same moment. Needs root and /dev/fuse.

import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as http from 'node:http'
import * as net from 'node:net'
import * as path from 'node:path'
import t from 'tap'

import { isLoopback, negotiate, parseListenAddress, renderMetrics } from '../src/control/metrics'
import type { Status } from '../src/status'
import { run, start } from '../../../test/helpers/proc'
import { ROOT, STEVED_BIN, isMounted, startSteved, tmpDir, waitForStatus } from '../../../test/helpers/steved'

const CTL = path.join(__dirname, '..', 'bin', 'stevectl.js')
const CLIENT = path.join(__dirname, 'clients', 'jsclient.py')
const PARSE = path.join(__dirname, 'clients', 'promparse.py')
const PYTHON = path.join(ROOT, '.venv', 'bin', 'python')
const OM = 'application/openmetrics-text; version=1.0.0; charset=utf-8'
const TEXT = 'text/plain; version=0.0.4; charset=utf-8'

const ctl = (device: string, ...args: string[]) => run(process.execPath, [CTL, '--device', device, ...args], { timeoutMs: 20000 })

/** sample name + sorted labels -> value, as prometheus-client parsed them. */
type Samples = Map<string, number | null>
const key = (name: string, labels: Record<string, string> = {}): string =>
  name + JSON.stringify(Object.fromEntries(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b))))

async function parse(text: string, format: 'text' | 'openmetrics'): Promise<{ samples: Samples; families: Record<string, { type: string; unit: string }> }> {
  if (!fs.existsSync(PYTHON)) throw new Error(`${PYTHON} missing: run scripts/setup.sh (prometheus-client comes from scripts/requirements.txt)`)
  const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const { spawn } = require('node:child_process') as typeof import('node:child_process')
    const child = spawn(PYTHON, [PARSE, format], { stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(text)
  })
  if (r.code !== 0) throw new Error(`prometheus-client rejected the ${format} exposition: ${r.stderr}\n${text}`)
  const fams = JSON.parse(r.stdout) as Record<string, { type: string; unit: string; samples: Array<[string, Record<string, string>, number | null]> }>
  const samples: Samples = new Map()
  for (const f of Object.values(fams)) for (const [n, l, v] of f.samples) samples.set(key(n, l), v)
  return { samples, families: fams }
}

function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (d: string) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body }))
    })
    req.on('error', reject)
    req.setTimeout(10000, () => req.destroy(new Error(`no answer from ${url} in 10 s`)))
    req.end()
  })
}

/**
 * steved with --metrics on an ephemeral port, started by the shared helper; the port is read
 * from the start-up line, which the helper keeps to itself, so it is found in /proc instead:
 * the one TCP socket steved listens on.
 */
async function metricsUrl(pid: number): Promise<string> {
  const until = Date.now() + 10000
  for (;;) {
    const inodes = new Set<string>()
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))
        if (m) inodes.add(m[1])
      } catch {
        /* closed meanwhile */
      }
    }
    for (const table of ['tcp', 'tcp6']) {
      for (const line of fs.readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/)
        // state 0A = LISTEN; local address is HEXIP:HEXPORT
        if (f.length > 9 && f[3] === '0A' && inodes.has(f[9])) return `http://${table === 'tcp' ? '127.0.0.1' : '[::1]'}:${parseInt(f[1].split(':')[1], 16)}/metrics`
      }
    }
    if (Date.now() > until) throw new Error(`steved ${pid} listens on no TCP port`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Every figure the exposition takes from the status document, as sample key -> expected value. */
function expected(st: Status): Map<string, number> {
  const e = new Map<string, number>([
    [key('steved_up'), 1],
    [key('steved_tokens'), st.pool.jobs],
    [key('steved_tokens_free'), st.pool.free],
    [key('steved_tokens_held'), st.pool.held],
    [key('steved_tokens_reserved'), st.pool.reserved],
    [key('steved_holders'), st.holders.length],
    [key('steved_reservations'), st.reservations.length],
    [key('steved_tokens_granted_total'), st.counters.granted],
    [key('steved_tokens_returned_total'), st.counters.returned],
    [key('steved_tokens_reclaimed_total'), st.counters.reclaimed],
    [key('steved_enospc_total'), st.counters.enospc],
    [key('steved_interrupts_total'), st.counters.interrupts],
    [key('steved_eagain_total'), st.counters.eagain],
    [key('steved_reservations_expired_total'), st.counters.reservationsExpired],
    [key('steved_peak_holders'), st.counters.peakHolders],
    [key('steved_setting_min_jobs'), st.settings.minJobs],
    [key('steved_start_time_seconds'), Date.parse(st.server.startedAt) / 1000],
    [key('steved_build_info', { version: st.server.version, transport: st.server.transport, path: st.server.path }), 1],
  ])
  for (const reason of ['no-tokens', 'load', 'memory', 'pressure:cpu', 'pressure:memory', 'pressure:io', 'per-process-limit', 'group-limit']) {
    e.set(key('steved_waiters', { reason }), st.waiters.filter((w) => w.reason === reason).length)
  }
  for (const g of st.groups) {
    e.set(key('steved_group_tokens', { group: g.name }), g.tokens)
    e.set(key('steved_group_members', { group: g.name }), g.members.length)
    if (g.limit !== null) e.set(key('steved_group_limit', { group: g.name }), g.limit)
  }
  return e
}

t.test('a scrape of a live steved parses as OpenMetrics and as text 0.0.4, and matches status --json', async (t) => {
  const s = await startSteved(t, { jobs: 4, args: ['--metrics', '127.0.0.1:0', '--per-process-limit', '3', '--load-average', '10000'] })
  const url = await metricsUrl(s.pid)

  // A holder of 2 tokens (in a capped group), a second holder of 2, and a waiter for a fifth.
  const holder = start(t, 'python3', [CLIENT, s.path, 'hold', '2'])
  const hm = await holder.waitFor(/^held 2 (\d+)$/m)
  t.equal((await ctl(s.path, 'group', 'join', 'pkg/with "quotes"', hm[1], '2')).code, 0, 'group join')
  const other = start(t, 'python3', [CLIENT, s.path, 'hold', '2'])
  await other.waitFor(/^held 2/m)
  const waiter = start(t, 'python3', [CLIENT, s.path, 'block'])
  await waiter.waitFor(/^parking/m)
  await waitForStatus(s, (r) => r.waiters.some((w) => w.reason === 'no-tokens'), 'the waiter parked')

  const om = await get(url, { Accept: 'application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1' })
  const text = await get(url)
  const st = JSON.parse((await ctl(s.path, 'status', '--json')).stdout) as Status
  t.equal(om.status, 200)
  t.equal(om.type, OM, 'OpenMetrics when the scraper asks for it (as Prometheus does)')
  t.equal(text.status, 200)
  t.equal(text.type, TEXT, 'text 0.0.4 otherwise')
  t.match(om.body, /# EOF\n$/, 'OpenMetrics ends with # EOF')

  t.equal(st.pool.held, 4, 'status: 4 held')
  for (const [format, body] of [['openmetrics', om.body], ['text', text.body]] as const) {
    const { samples, families } = await parse(body, format)
    const want = expected(st)
    for (const [k, v] of want) t.equal(samples.get(k), v, `${format}: ${k}`)
    t.equal(samples.get(key('steved_tokens_held')), 4, `${format}: held = 4`)
    t.equal(samples.get(key('steved_waiters', { reason: 'no-tokens' })), 1, `${format}: one waiter for want of tokens`)
    t.equal(samples.get(key('steved_group_tokens', { group: 'pkg/with "quotes"' })), 2, `${format}: the group's holding, its odd name intact`)
    t.equal(samples.get(key('steved_setting_per_process_limit')), 3, `${format}: a set limit is exported`)
    t.notOk(samples.has(key('steved_setting_min_memory_avail_bytes')), `${format}: an unset limit is absent`)
    // Time-based figures move between the scrape and the status call; they only grow.
    t.ok((samples.get(key('steved_zero_free_seconds_total')) ?? -1) <= st.counters.secondsAtZeroFree, `${format}: time at zero free`)
    t.ok((samples.get(key('steved_longest_wait_seconds')) ?? -1) <= Math.max(...st.waiters.map((w) => w.waitingForSeconds)), `${format}: longest wait`)
    t.equal(families[format === 'openmetrics' ? 'steved_tokens_granted' : 'steved_tokens_granted']?.type, 'counter', `${format}: counters are typed counter`)
    if (format === 'openmetrics') t.equal(families.steved_zero_free_seconds?.unit, 'seconds', 'units are declared')
  }

  t.equal((await get(url.replace('/metrics', '/nothing'))).status, 404)
  t.equal((await get(url, {}, 'POST')).status, 405)
  t.equal((await get(url, {}, 'HEAD')).status, 200)
})

t.test('stevectl metrics: stdout, and --textfile written atomically; steved_up 0 once steved is gone', async (t) => {
  const dir = tmpDir(t)
  const s = await startSteved(t, { jobs: 3 })
  const holder = start(t, 'python3', [CLIENT, s.path, 'hold', '2'])
  await holder.waitFor(/^held 2/m)
  const stdout = await ctl(s.path, 'metrics')
  t.equal(stdout.code, 0, stdout.stderr)
  const st = JSON.parse((await ctl(s.path, 'status', '--json')).stdout) as Status
  const fromStdout = await parse(stdout.stdout, 'text')
  for (const [k, v] of expected(st)) t.equal(fromStdout.samples.get(k), v, `stdout: ${k}`)
  t.equal(fromStdout.samples.get(key('steved_tokens_held')), 2, 'held = 2')
  const omOut = await ctl(s.path, 'metrics', '--openmetrics')
  await parse(omOut.stdout, 'openmetrics')

  const file = path.join(dir, 'steved.prom')
  const w = await ctl(s.path, 'metrics', '--textfile', file)
  t.equal(w.code, 0, w.stderr)
  t.equal(w.stdout, '', 'nothing on stdout')
  const fromFile = await parse(fs.readFileSync(file, 'utf8'), 'text')
  t.equal(fromFile.samples.get(key('steved_tokens_held')), 2, 'the file says held = 2')
  t.equal(fromFile.samples.get(key('steved_up')), 1)
  t.same(fs.readdirSync(dir), ['steved.prom'], 'no temporary file left beside it')
  t.equal(fs.statSync(file).mode & 0o777, 0o644, 'readable by node_exporter')

  for (const bad of [['--textfile', path.join(dir, 'steved.txt')], ['--textfile', file, '--openmetrics'], ['--colour']]) {
    const r = await ctl(s.path, 'metrics', ...bad)
    t.equal(r.code, 2, `usage error: ${bad.join(' ')}`)
    t.match(r.stderr, /^stevectl: metrics: /)
  }

  await s.stop()
  const down = await ctl(s.path, 'metrics', '--textfile', file)
  t.equal(down.code, 1, 'steved gone: exit 1')
  t.match(down.stderr, /^stevectl: /)
  const gone = await parse(fs.readFileSync(file, 'utf8'), 'text')
  t.equal(gone.samples.get(key('steved_up')), 0, 'the file now says steved_up 0 instead of stale figures')
})

t.test('--metrics: a bad address is a usage error; a taken port fails with nothing mounted; non-loopback warns', async (t) => {
  const dir = tmpDir(t)
  const file = path.join(dir, 'jobserver')
  for (const bad of ['nine', '127.0.0.1:99999', '::1:9100', 'example.org:9100']) {
    const r = await run(process.execPath, [STEVED_BIN, '--transport', 'fuse', '--path', file, '--metrics', bad], { timeoutMs: 20000 })
    t.equal(r.code, 2, `--metrics ${bad}: exit 2`)
    t.match(r.stderr, /^steved: --metrics: .*\n$/, `one line: ${r.stderr}`)
  }
  const taken = net.createServer()
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => taken.close())
  const port = (taken.address() as net.AddressInfo).port
  const r = await run(process.execPath, [STEVED_BIN, '--transport', 'fuse', '--path', file, '--metrics', `127.0.0.1:${port}`], { timeoutMs: 20000 })
  t.equal(r.code, 1, 'a taken port: exit 1')
  t.match(r.stderr, /^steved: --metrics: cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE \(pick another address or port\)\n$/)
  t.notOk(isMounted(file), 'nothing left mounted')

  // Started by hand to read its start-up lines; stopped with SIGTERM below, unmounted whatever happens.
  t.teardown(() => {
    if (isMounted(file)) spawnSync('umount', ['-l', file])
  })
  const d = start(t, process.execPath, [STEVED_BIN, '--transport', 'fuse', '--path', file, '-j', '1', '--metrics', '0.0.0.0:0'])
  const m = await d.waitFor(/^metrics: (http:\/\/0\.0\.0\.0:(\d+)\/metrics)$/m)
  t.equal((await get(`http://127.0.0.1:${m[2]}/metrics`)).status, 200, 'an explicit non-loopback address is allowed')
  d.child.kill('SIGTERM')
  const done = await d.exited
  t.equal(done.code, 0, 'SIGTERM: exit 0 with the listener open')
  t.match(done.stderr, /warning: --metrics listens on 0\.0\.0\.0: other machines can read/, 'with a warning')
  t.notOk(isMounted(file), 'unmounted')
})

t.test('pure parts: listen addresses, content negotiation, label escaping', async (t) => {
  t.same(parseListenAddress('9100'), { host: '127.0.0.1', port: 9100 }, 'a bare port stays on this machine')
  t.same(parseListenAddress(':9100'), { host: '127.0.0.1', port: 9100 })
  t.same(parseListenAddress('[::1]:9100'), { host: '::1', port: 9100 })
  t.same(parseListenAddress('0.0.0.0:0'), { host: '0.0.0.0', port: 0 })
  for (const bad of ['', 'x', ':', '1.2.3.4:', '1.2.3.4:70000', 'host:1', '::1:1']) t.throws(() => parseListenAddress(bad), bad)
  t.ok(isLoopback('127.0.0.1') && isLoopback('::1') && isLoopback('localhost'))
  t.notOk(isLoopback('0.0.0.0') || isLoopback('::') || isLoopback('192.168.1.1'))
  t.equal(negotiate(undefined), 'text')
  t.equal(negotiate('text/plain'), 'text')
  t.equal(negotiate('application/openmetrics-text;version=1.0.0'), 'openmetrics')
  const st = {
    server: { version: '1', transport: 'fuse', path: '/a\\b"c\nd', startedAt: new Date(0).toISOString() },
    pool: { jobs: 1, free: -1, held: 2, reserved: 0, waiting: 0 },
    settings: { minJobs: 1, loadAverage: null, minMemoryAvailMiB: 1, perProcessLimit: null, reservationExpirySeconds: 1 },
    holders: [],
    waiters: [],
    reservations: [],
    groups: [],
    counters: { granted: 0, returned: 0, reclaimed: 0, enospc: 0, interrupts: 0, eagain: 0, reservationsExpired: 0, peakHolders: 0, secondsAtZeroFree: 0 },
  } as unknown as Status
  const text = renderMetrics(st, 'openmetrics')
  t.match(text, /steved_build_info\{version="1",transport="fuse",path="\/a\\\\b\\"c\\nd"\} 1/, 'backslash, quote and newline escaped')
  t.match(text, /^steved_tokens_free -1$/m, 'a draining pool shows negative free')
  t.match(text, /^steved_setting_min_memory_avail_bytes 1048576$/m, 'MiB exported as bytes')
  const parsed = await parse(text, 'openmetrics')
  t.equal(parsed.samples.get(key('steved_build_info', { version: '1', transport: 'fuse', path: '/a\\b"c\nd' })), 1, 'the parser reads the escaped path back')
})
