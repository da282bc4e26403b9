// Reading processes from /proc: the edge where the holder looks at the build's process tree.
// The decisions over what is read are pure and live in tree.ts.
import * as fs from 'node:fs'

import { parseStat, type ProcInfo } from 'jobclient'

// The parsing of /proc/PID/stat is jobclient's (one copy for steved and the shim).
export { parseStat, type ProcInfo } from 'jobclient'

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

  /** The uid a process runs as (the owner of /proc/PID), or null when it does not exist. */
  uid(pid: number): number | null {
    try {
      return fs.statSync(`${this.root}/${pid}`).uid
    } catch {
      return null
    }
  }

  /** A process's command line (its argv), or null when it cannot be read. */
  cmdline(pid: number): string[] | null {
    try {
      return fs.readFileSync(`${this.root}/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1)
    } catch {
      return null
    }
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
