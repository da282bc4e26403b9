// The human-readable status report (SIGUSR1): the status document (what `stevectl status --json`
// prints) in prose, so the two cannot disagree. Tests read the document, not these words.

import type { Status } from 'jobclient'

const secs = (s: number): string => `${s.toFixed(s < 10 ? 2 : 0)}s`

export function formatReport(st: Status, where: string): string {
  const lines: string[] = []
  const p = st.pool
  lines.push(`steved status at ${st.time} (${where}): ${p.free}/${p.jobs} tokens free, ${p.held} held, ${p.reserved} reserved`)
  const c = st.settings
  const limits = [
    c.loadAverage !== null ? `load <= ${c.loadAverage} (min-jobs ${c.minJobs})` : null,
    c.minMemoryAvailMiB !== null ? `MemAvailable >= ${c.minMemoryAvailMiB} MiB` : null,
    c.perProcessLimit !== null ? `per-process <= ${c.perProcessLimit}` : null,
  ].filter((x) => x !== null)
  if (limits.length) {
    const smp = st.lastSample ? `; last sample: load ${st.lastSample.load1}, ${st.lastSample.memAvailMiB} MiB available` : ''
    lines.push(`limits: ${limits.join(', ')}${smp}`)
  }
  lines.push(`holders: ${st.holders.length === 0 ? 'none' : ''}`)
  for (const h of st.holders) {
    lines.push(`  pid ${h.pid}  ${h.tokens} token${h.tokens === 1 ? '' : 's'}  held ${h.heldForSeconds.map(secs).join(', ')}  ${h.cmdline}`)
  }
  lines.push(`waiters: ${st.waiters.length === 0 ? 'none' : ''}`)
  for (const w of st.waiters) {
    lines.push(`  pid ${w.pid}  ${w.how}  waiting ${secs(w.waitingForSeconds)}  because: ${w.reason}  ${w.cmdline}`)
  }
  lines.push(`reservations: ${st.reservations.length === 0 ? 'none' : ''}`)
  for (const r of st.reservations) {
    lines.push(`  pid ${r.pid}  reserved ${secs(r.ageSeconds)} ago, expires in ${secs(r.expiresInSeconds)}  ${r.cmdline}`)
  }
  if (st.groups.length) {
    lines.push('groups:')
    for (const g of st.groups) {
      lines.push(`  ${g.name}  ${g.tokens}/${g.limit ?? 'unlimited'} tokens  roots ${g.roots.join(',')}  members ${g.members.join(',')}`)
    }
  }
  const k = st.counters
  lines.push(
    `since start: ${k.granted} granted, ${k.returned} returned, ${k.reclaimed} reclaimed from exited processes, ` +
      `${k.enospc} ENOSPC, ${k.interrupts} interrupted, ${k.eagain} EAGAIN, ${k.reservationsExpired} reservations expired, ` +
      `peak ${k.peakHolders} holders, ${secs(k.secondsAtZeroFree)} with no free token`,
  )
  return lines.join('\n')
}
