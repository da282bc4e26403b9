// steved's figures for Prometheus: the status document (`stevectl status --json`) rendered as
// OpenMetrics 1.0 or as the classic text format 0.0.4, and the small HTTP listener behind
// `steved --metrics HOST:PORT`. `stevectl metrics --textfile` renders the same text for
// node_exporter's textfile collector. Everything here comes from the status object, never from
// the prose report, so the two cannot drift apart.

import * as http from 'node:http'
import * as net from 'node:net'

import type { Status } from '../status'

export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8'
export const TEXT_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

export type MetricsFormat = 'openmetrics' | 'text'

/** Every reason a waiter can have; each is always exported, so a rate or alert never sees a gap. */
export const WAIT_REASONS = ['no-tokens', 'load', 'memory', 'pressure:cpu', 'pressure:memory', 'pressure:io', 'per-process-limit', 'group-limit'] as const

type Kind = 'gauge' | 'counter' | 'info'

interface Family {
  name: string
  kind: Kind
  help: string
  unit?: string
  samples: Array<{ labels?: Record<string, string>; value: number }>
}

const escapeHelp = (s: string): string => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')
const escapeLabel = (s: string): string => s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')

function num(v: number): string {
  if (Number.isNaN(v)) return 'NaN'
  if (v === Infinity) return '+Inf'
  if (v === -Infinity) return '-Inf'
  return String(v)
}

function labels(l: Record<string, string> | undefined): string {
  if (!l || Object.keys(l).length === 0) return ''
  return `{${Object.entries(l)
    .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
    .join(',')}}`
}

/** The metric families, from one status document. */
export function metricFamilies(st: Status): Family[] {
  const g = (name: string, help: string, value: number, unit?: string): Family => ({ name, kind: 'gauge', help, unit, samples: [{ value }] })
  const c = (name: string, help: string, value: number, unit?: string): Family => ({ name, kind: 'counter', help, unit, samples: [{ value }] })
  const s = st.settings
  const byReason = new Map<string, number>(WAIT_REASONS.map((r) => [r, 0]))
  for (const w of st.waiters) byReason.set(w.reason, (byReason.get(w.reason) ?? 0) + 1)
  const out: Family[] = [
    {
      name: 'steved_build',
      kind: 'info',
      help: 'steved version, transport and jobserver path (value always 1)',
      samples: [{ labels: { version: st.server.version, transport: st.server.transport, path: st.server.path }, value: 1 }],
    },
    g('steved_up', 'Whether steved answered (1); stevectl metrics --textfile writes 0 when it did not', 1),
    g('steved_start_time_seconds', 'When steved started, in seconds since the Unix epoch', Date.parse(st.server.startedAt) / 1000, 'seconds'),
    g('steved_tokens', 'Tokens in the pool (the jobs setting)', st.pool.jobs),
    g('steved_tokens_free', 'Tokens free now (negative while a lowered pool drains)', st.pool.free),
    g('steved_tokens_held', 'Tokens held by client processes now', st.pool.held),
    g('steved_tokens_reserved', 'Tokens reserved for pollers that were told they may read', st.pool.reserved),
    g('steved_holders', 'Client processes holding at least one token', st.holders.length),
    {
      name: 'steved_waiters',
      kind: 'gauge',
      help: 'Parked reads and polls waiting for a token, by why they wait',
      samples: [...byReason].map(([reason, value]) => ({ labels: { reason }, value })),
    },
    g('steved_longest_wait_seconds', 'How long the longest-waiting read or poll has waited (0 when none waits)', Math.max(0, ...st.waiters.map((w) => w.waitingForSeconds)), 'seconds'),
    g('steved_reservations', 'Reservations outstanding', st.reservations.length),
    c('steved_tokens_granted', 'Tokens handed to clients since start', st.counters.granted),
    c('steved_tokens_returned', 'Tokens written back by clients since start', st.counters.returned),
    c('steved_tokens_reclaimed', 'Tokens taken back from processes that exited holding them', st.counters.reclaimed),
    c('steved_enospc', 'Writes refused with ENOSPC (a process returned more than it held)', st.counters.enospc),
    c('steved_interrupts', 'Waiting requests interrupted by a signal (answered EINTR)', st.counters.interrupts),
    c('steved_eagain', 'Non-blocking reads answered EAGAIN (no token free)', st.counters.eagain),
    c('steved_reservations_expired', 'Reservations that expired before their poller read', st.counters.reservationsExpired),
    c('steved_zero_free_seconds', 'Time spent with no token free, since start', st.counters.secondsAtZeroFree, 'seconds'),
    g('steved_peak_holders', 'Most processes that held tokens at once, since start', st.counters.peakHolders),
    g('steved_setting_min_jobs', 'Tokens that may be out whatever the load (min-jobs)', s.minJobs),
    g('steved_setting_reservation_expiry_seconds', 'How long a reservation lasts (reservation-expiry)', s.reservationExpirySeconds, 'seconds'),
  ]
  // Settings that may be unset are exported only when set: an absent series means "no limit".
  if (s.loadAverage !== null) out.push(g('steved_setting_load_average', 'Grant only while the 1-minute load average is at most this', s.loadAverage))
  if (s.minMemoryAvailMiB !== null) out.push(g('steved_setting_min_memory_avail_bytes', 'Grant only while MemAvailable is at least this', s.minMemoryAvailMiB * 1024 * 1024, 'bytes'))
  if (s.perProcessLimit !== null) out.push(g('steved_setting_per_process_limit', 'Most tokens (held + reserved) one process may have', s.perProcessLimit))
  out.push({
    name: 'steved_group_tokens',
    kind: 'gauge',
    help: 'Tokens held and reserved by the members of a process group (stevectl group join)',
    samples: st.groups.map((gr) => ({ labels: { group: gr.name }, value: gr.tokens })),
  })
  out.push({
    name: 'steved_group_limit',
    kind: 'gauge',
    help: 'Cap of a process group (absent when the group has none)',
    samples: st.groups.filter((gr) => gr.limit !== null).map((gr) => ({ labels: { group: gr.name }, value: gr.limit as number })),
  })
  out.push({
    name: 'steved_group_members',
    kind: 'gauge',
    help: 'Processes in a process group',
    samples: st.groups.map((gr) => ({ labels: { group: gr.name }, value: gr.members.length })),
  })
  return out
}

/**
 * The exposition text. OpenMetrics names a counter family without `_total` and an info family
 * without `_info`, and ends with `# EOF`; the 0.0.4 text format (what node_exporter's textfile
 * collector reads) names them as their samples and has no info type.
 */
export function renderMetrics(st: Status, format: MetricsFormat = 'text'): string {
  const lines: string[] = []
  const om = format === 'openmetrics'
  for (const f of metricFamilies(st)) {
    const suffix = f.kind === 'counter' ? '_total' : f.kind === 'info' ? '_info' : ''
    const family = om ? f.name : f.name + suffix
    const type = om ? f.kind : f.kind === 'info' ? 'gauge' : f.kind
    lines.push(`# HELP ${family} ${escapeHelp(f.help)}`)
    lines.push(`# TYPE ${family} ${type}`)
    if (om && f.unit) lines.push(`# UNIT ${family} ${f.unit}`)
    for (const smp of f.samples) lines.push(`${f.name}${suffix}${labels(smp.labels)} ${num(smp.value)}`)
  }
  if (om) lines.push('# EOF')
  return lines.join('\n') + '\n'
}

/** What steved_up 0 looks like, for a textfile when steved cannot be reached. */
export function renderDown(): string {
  return '# HELP steved_up Whether steved answered (1); stevectl metrics --textfile writes 0 when it did not\n# TYPE steved_up gauge\nsteved_up 0\n'
}

/** OpenMetrics when the scraper asks for it (Prometheus does), else the 0.0.4 text format. */
export function negotiate(accept: string | undefined): MetricsFormat {
  return accept !== undefined && /application\/openmetrics-text/i.test(accept) ? 'openmetrics' : 'text'
}

export interface ListenAddress {
  host: string
  port: number
}

/**
 * `HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT`. Without a host it is 127.0.0.1: the figures
 * stay on this machine unless the operator names another address.
 */
export function parseListenAddress(v: string): ListenAddress {
  const t = v.trim()
  let host = '127.0.0.1'
  let portText = t
  const m6 = /^\[([^\]]+)\]:(.*)$/.exec(t)
  if (m6) {
    host = m6[1]
    portText = m6[2]
  } else if (t.includes(':')) {
    const i = t.lastIndexOf(':')
    if (t.indexOf(':') !== i) throw new Error(`an IPv6 address needs brackets, as in [::1]:9100 (got '${v}')`)
    if (i > 0) host = t.slice(0, i)
    portText = t.slice(i + 1)
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) throw new Error(`the port must be a number from 0 to 65535, as in 127.0.0.1:9100 (got '${v}')`)
  if (host !== 'localhost' && net.isIP(host) === 0) throw new Error(`the host must be an IP address or localhost (got '${host}')`)
  return { host, port: Number(portText) }
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host) || /^::ffff:127\./i.test(host)
}

export interface MetricsServer {
  /** Where it listens (the real port when 0 was asked for). */
  readonly address: ListenAddress
  readonly url: string
  /** Idempotent; also drops kept-alive scrapers' connections so the process can exit. */
  close(): void
}

/**
 * Serve GET /metrics. `status` is called once per scrape; a scrape costs one status document,
 * as `stevectl status --json` does.
 */
export function startMetricsServer(addr: ListenAddress, status: () => Status): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('only GET and HEAD\n')
      return
    }
    if (url === '/') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' }).end('steved: metrics are at /metrics\n')
      return
    }
    if (url !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found: metrics are at /metrics\n')
      return
    }
    let body: string
    let format: MetricsFormat
    try {
      format = negotiate(req.headers.accept)
      body = renderMetrics(status(), format)
    } catch (e) {
      res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`steved: cannot render metrics: ${(e as Error).message}\n`)
      return
    }
    res.writeHead(200, { 'Content-Type': format === 'openmetrics' ? OPENMETRICS_CONTENT_TYPE : TEXT_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body) })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
  // A scraper that stalls must not hold a socket for ever.
  server.requestTimeout = 10_000
  server.headersTimeout = 10_000
  server.keepAliveTimeout = 5_000
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: addr.host, port: addr.port }, () => {
      server.off('error', reject)
      // A failing socket later (a client reset) is that client's problem, not the daemon's.
      server.on('error', () => {})
      const a = server.address() as net.AddressInfo
      const address = { host: a.address, port: a.port }
      const hostPart = a.family === 'IPv6' ? `[${a.address}]` : a.address
      let closed = false
      resolve({
        address,
        url: `http://${hostPart}:${a.port}/metrics`,
        close() {
          if (closed) return
          closed = true
          server.close()
          server.closeAllConnections()
        },
      })
    })
  })
}
