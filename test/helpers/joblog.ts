// Job logs written by test recipes: "start NAME NANOS" and "end NAME NANOS" lines.

export interface Job {
  name: string
  start: number
  end: number
}

export function parseJobLog(text: string): Job[] {
  const starts = new Map<string, number>()
  const jobs: Job[] = []
  for (const line of text.split('\n')) {
    const m = /^(start|end) (\S+) (\d+)$/.exec(line.trim())
    if (!m) continue
    const at = Number(BigInt(m[3]) / 1000n) / 1000 // ns -> ms
    if (m[1] === 'start') starts.set(m[2], at)
    else {
      const s = starts.get(m[2])
      if (s === undefined) throw new Error(`end without start: ${line}`)
      jobs.push({ name: m[2], start: s, end: at })
    }
  }
  if (jobs.length !== starts.size) throw new Error(`${starts.size - jobs.length} job(s) never ended`)
  return jobs
}

/** Most jobs running at the same instant (an end at the same time as a start does not overlap). */
export function maxOverlap(jobs: Job[]): number {
  const ev: Array<[number, number]> = []
  for (const j of jobs) ev.push([j.start, 1], [j.end, -1])
  ev.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  let cur = 0
  let peak = 0
  for (const [, d] of ev) {
    cur += d
    peak = Math.max(peak, cur)
  }
  return peak
}
