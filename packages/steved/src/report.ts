// The human-readable status report (SIGUSR1, and later `stevectl status`).

import type { PoolSnapshot } from './core'

const secs = (ms: number): string => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 0)}s`

export function formatReport(s: PoolSnapshot, where: string, cmdline: (pid: number) => string, wallClock = new Date()): string {
  const lines: string[] = []
  lines.push(
    `steved status at ${wallClock.toISOString()} (${where}): ${s.free}/${s.jobs} tokens free, ${s.held} held, ${s.reserved} reserved`,
  )
  const c = s.config
  const limits = [
    c.loadAverage !== null ? `load <= ${c.loadAverage} (min-jobs ${c.minJobs})` : null,
    c.minMemoryAvailMiB !== null ? `MemAvailable >= ${c.minMemoryAvailMiB} MiB` : null,
    c.perProcessLimit !== null ? `per-process <= ${c.perProcessLimit}` : null,
  ].filter((x) => x !== null)
  if (limits.length) {
    const smp = s.lastSample ? `; last sample: load ${s.lastSample.load1}, ${Math.round(s.lastSample.memAvailMiB)} MiB available` : ''
    lines.push(`limits: ${limits.join(', ')}${smp}`)
  }
  lines.push(`holders: ${s.holders.length === 0 ? 'none' : ''}`)
  for (const h of s.holders) {
    lines.push(`  pid ${h.pid}  ${h.tokens} token${h.tokens === 1 ? '' : 's'}  held ${h.heldForMs.map(secs).join(', ')}  ${cmdline(h.pid)}`)
  }
  lines.push(`waiters: ${s.waiters.length === 0 ? 'none' : ''}`)
  for (const w of s.waiters) {
    lines.push(`  pid ${w.pid}  ${w.how}  waiting ${secs(w.waitingForMs)}  because: ${w.reason}  ${cmdline(w.pid)}`)
  }
  lines.push(`reservations: ${s.reservations.length === 0 ? 'none' : ''}`)
  for (const r of s.reservations) {
    lines.push(`  pid ${r.pid}  fh ${r.fh}  reserved ${secs(r.ageMs)} ago, expires in ${secs(Math.max(0, r.expiresInMs))}  ${cmdline(r.pid)}`)
  }
  if (s.groups.length) {
    lines.push('groups:')
    for (const g of s.groups) {
      lines.push(`  ${g.name}  ${g.tokens}/${g.limit ?? 'unlimited'} tokens  roots ${g.roots.join(',')}  members ${g.members.join(',')}`)
    }
  }
  const k = s.counters
  lines.push(
    `since start: ${k.granted} granted, ${k.returned} returned, ${k.reclaimed} reclaimed from exited processes, ` +
      `${k.enospc} ENOSPC, ${k.interrupts} interrupted, ${k.eagain} EAGAIN, ${k.reservationsExpired} reservations expired, ` +
      `peak ${k.peakHolders} holders, ${secs(k.msAtZeroFree)} with no free token`,
  )
  return lines.join('\n')
}
