// The words the shim shows in einfo/ewarn lines: which jobserver, and why a job waits. Pure
// functions of steved's status document (null for a jobserver that is not steved).
import type { StevedStatus } from './steved-control'

const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`

/** "steved 0.1.0 at /run/steved/jobserver (FUSE file, 8 tokens)" or "the jobserver at PATH (not steved)". */
export function describeJobserver(status: StevedStatus | null, path: string): string {
  if (!status) return `the jobserver at ${path} (not steved)`
  const kind = status.server.transport === 'cuse' ? 'CUSE device' : 'FUSE file'
  return `steved ${status.server.version} at ${path} (${kind}, ${plural(status.pool.jobs, 'token')})`
}

/** Why process `pid` waits for a token, as steved sees it. */
export function waitReason(status: StevedStatus | null, pid: number, path: string): string {
  if (!status) return `no token is free at ${path}`
  const me = status.waiters.find((w) => w.pid === pid)
  const others = status.waiters.filter((w) => w.pid !== pid).length
  const queue = others > 0 ? `; ${plural(others, 'other client')} waiting too` : ''
  switch (me?.reason) {
    case 'load':
      return `steved grants no token while the load average (${status.lastSample?.load1 ?? '?'}) is above its limit (${status.settings.loadAverage})${queue}`
    case 'memory':
      return `steved grants no token while MemAvailable (${status.lastSample?.memAvailMiB ?? '?'} MiB) is below its floor (${status.settings.minMemoryAvailMiB} MiB)${queue}`
    case 'per-process-limit':
      return `this holder is at steved's per-process limit (${status.settings.perProcessLimit})${queue}`
    case 'group-limit':
      return `this build's group is at its token limit${queue}`
    default: {
      const holders = status.holders.length
      const pool = status.pool.jobs === 1 ? 'the only token is' : `all ${status.pool.jobs} tokens are`
      return `${pool} in use (held by ${plural(holders, 'process', 'processes')})${queue}`
    }
  }
}
