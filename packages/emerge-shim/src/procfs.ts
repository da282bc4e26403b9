// Reading processes from /proc: the edge where the holder looks at the build's process tree.
// The decisions over what is read are pure and live in tree.ts.
import * as fs from 'node:fs'

/** One process as /proc/PID/stat shows it. */
export interface ProcInfo {
  pid: number
  ppid: number
  /** Session id: a daemon that called setsid() has left the build. */
  sid: number
  /** Start time in clock ticks since boot: (pid, start) names a process across pid reuse. */
  start: number
  /** One-letter state; Z (zombie) and X (dead) have exited. */
  state: string
  /** The executable's name as the kernel keeps it (15 bytes at most). */
  comm: string
}

/**
 * Parse /proc/PID/stat. The comm field is in parentheses and may contain spaces and ')', so
 * the fields are counted from the last ')'. Field numbers as in proc(5): state 3, ppid 4,
 * session 6, starttime 22.
 */
export function parseStat(text: string): ProcInfo | null {
  const open = text.indexOf('(')
  const close = text.lastIndexOf(')')
  if (open < 0 || close < open) return null
  const pid = Number(text.slice(0, open).trim())
  const rest = text.slice(close + 2).trim().split(/\s+/)
  if (!Number.isInteger(pid) || rest.length < 20) return null
  return {
    pid,
    comm: text.slice(open + 1, close),
    state: rest[0],
    ppid: Number(rest[1]),
    sid: Number(rest[3]),
    start: Number(rest[19]),
  }
}

/** /proc, or another directory laid out like it (tests). */
export class ProcFs {
  constructor(readonly root = '/proc') {}

  /** A process, or null when it does not exist (or cannot be read). */
  stat(pid: number): ProcInfo | null {
    try {
      return parseStat(fs.readFileSync(`${this.root}/${pid}/stat`, 'utf8'))
    } catch {
      return null
    }
  }

  /** Every process that can be read now. */
  list(): ProcInfo[] {
    const out: ProcInfo[] = []
    let names: string[]
    try {
      names = fs.readdirSync(this.root)
    } catch {
      return out
    }
    for (const name of names) {
      if (!/^\d+$/.test(name)) continue
      const p = this.stat(Number(name))
      if (p) out.push(p)
    }
    return out
  }

  /**
   * Whether the environment the process was started with contains `entry` ("NAME=value")
   * exactly. False when it cannot be read (another user's process, or gone).
   */
  environHas(pid: number, entry: string): boolean {
    let buf: Buffer
    try {
      buf = fs.readFileSync(`${this.root}/${pid}/environ`)
    } catch {
      return false
    }
    return buf.toString('utf8').split('\0').includes(entry)
  }
}
