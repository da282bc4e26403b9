// The status document: what `stevectl status --json` prints and SIGUSR1 describes in prose.
// Its type and schema are jobclient's (Status, STATUS_SCHEMA; packages/steved/status.schema.json
// is generated from it), documented in docs/control.md.

import { POOL_SETTINGS, STATUS_VERSION, type Status } from 'jobclient'

import type { PoolSnapshot } from './core'
import { settingFromConfig } from './control/protocol'

export { STATUS_VERSION, type Status } from 'jobclient'

export interface ServerInfo {
  pid: number
  version: string
  transport: 'fuse' | 'cuse'
  path: string
  /** Wall-clock start time, ISO 8601. */
  startedAt: string
  adminGroup: number | null
  /** Status documents kept while their readers fetch them in chunks. */
  statusSnapshots: { count: number; bytes: number }
}

/** Longer command lines are cut: one process must not make every status document huge. */
export const STATUS_CMDLINE_MAX = 1024

const clip = (s: string): string => (s.length > STATUS_CMDLINE_MAX ? `${s.slice(0, STATUS_CMDLINE_MAX)} …` : s)

const s = (ms: number): number => Math.round(ms) / 1000

export function buildStatus(snap: PoolSnapshot, server: ServerInfo, fullCmdline: (pid: number) => string, now = new Date()): Status {
  const cmdline = (pid: number): string => clip(fullCmdline(pid))
  const c = snap.config
  return {
    version: STATUS_VERSION,
    time: now.toISOString(),
    server: { ...server, uptimeSeconds: s(now.getTime() - Date.parse(server.startedAt)) },
    pool: { jobs: snap.jobs, free: snap.free, held: snap.held, reserved: snap.reserved, waiting: snap.waiters.length },
    // One key per pool setting of the table, in the setting's unit.
    settings: Object.fromEntries(POOL_SETTINGS.map((d) => [d.daemon.status, settingFromConfig(d, c)])) as Status['settings'],
    lastSample: snap.lastSample
      ? {
          load1: snap.lastSample.load1,
          memAvailMiB: Math.round(snap.lastSample.memAvailMiB),
          pressure: snap.lastSample.pressure,
          ageSeconds: s(snap.lastSample.ageMs),
        }
      : null,
    holders: snap.holders.map((h) => ({ pid: h.pid, cmdline: cmdline(h.pid), tokens: h.tokens, heldForSeconds: h.heldForMs.map(s) })),
    waiters: snap.waiters.map((w) => ({ pid: w.pid, cmdline: cmdline(w.pid), how: w.how, waitingForSeconds: s(w.waitingForMs), reason: w.reason })),
    reservations: snap.reservations.map((r) => ({ pid: r.pid, cmdline: cmdline(r.pid), ageSeconds: s(r.ageMs), expiresInSeconds: s(Math.max(0, r.expiresInMs)) })),
    groups: snap.groups.map((g) => ({ name: g.name, limit: g.limit, owner: g.owner, roots: g.roots, members: g.members, tokens: g.tokens })),
    counters: {
      granted: snap.counters.granted,
      returned: snap.counters.returned,
      reclaimed: snap.counters.reclaimed,
      enospc: snap.counters.enospc,
      interrupts: snap.counters.interrupts,
      eagain: snap.counters.eagain,
      reservationsExpired: snap.counters.reservationsExpired,
      peakHolders: snap.counters.peakHolders,
      secondsAtZeroFree: s(snap.counters.msAtZeroFree),
    },
  }
}
