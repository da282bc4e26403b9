// What the kernel tells us about processes and the machine, read from /proc.

import * as fs from 'node:fs'

import { parseStat } from 'jobclient'

/**
 * FUSE requests carry the caller's thread id; tokens belong to its process (TGID).
 * Lookups are cached per thread id until the process exits (forget()). A thread's id is
 * free again as soon as that thread ends, while its process lives on, and may become a new
 * process's pid (pid_max is 32768 by default): so a cached mapping of a thread that is not
 * its process's main thread is used only while /proc/TGID/task/TID still exists (one stat,
 * no descriptor). The caller is inside its request, so its thread exists: when that entry is
 * gone, the id belongs to someone else now and is looked up afresh.
 */
export class ThreadMap {
  private readonly tgidOfTid = new Map<number, number>()
  private readonly tidsOfTgid = new Map<number, number[]>()

  constructor(private readonly procRoot = '/proc') {}

  tgid(tid: number): number {
    if (tid <= 0) return 0
    const known = this.tgidOfTid.get(tid)
    if (known !== undefined) {
      if (known === tid || fs.existsSync(`${this.procRoot}/${known}/task/${tid}`)) return known
      this.drop(tid, known)
    }
    let tgid = tid
    try {
      const m = /^Tgid:\s+(\d+)$/m.exec(fs.readFileSync(`${this.procRoot}/${tid}/status`, 'latin1'))
      if (m) tgid = Number(m[1])
    } catch {
      // Already gone: keep the tid; watching it will report the exit at once.
      return tid
    }
    this.tgidOfTid.set(tid, tgid)
    const tids = this.tidsOfTgid.get(tgid)
    if (tids) tids.push(tid)
    else this.tidsOfTgid.set(tgid, [tid])
    return tgid
  }

  private drop(tid: number, tgid: number): void {
    this.tgidOfTid.delete(tid)
    const tids = this.tidsOfTgid.get(tgid)
    if (!tids) return
    const i = tids.indexOf(tid)
    if (i >= 0) tids.splice(i, 1)
  }

  forget(tgid: number): void {
    for (const tid of this.tidsOfTgid.get(tgid) ?? []) this.tgidOfTid.delete(tid)
    this.tidsOfTgid.delete(tgid)
  }
}

export function cmdlineOf(pid: number, procRoot = '/proc'): string {
  if (pid <= 0) return '(outside our pid namespace)'
  try {
    const raw = fs.readFileSync(`${procRoot}/${pid}/cmdline`, 'utf8')
    const s = raw.replace(/\0+$/, '').split('\0').join(' ')
    if (s) return s
    return `[${fs.readFileSync(`${procRoot}/${pid}/comm`, 'utf8').trim()}]`
  } catch {
    return '(exited)'
  }
}

export interface MachineSample {
  load1: number
  memAvailMiB: number
}

export function sampleMachine(procRoot = '/proc'): MachineSample {
  const load1 = Number(fs.readFileSync(`${procRoot}/loadavg`, 'latin1').split(' ')[0])
  const m = /^MemAvailable:\s+(\d+) kB$/m.exec(fs.readFileSync(`${procRoot}/meminfo`, 'latin1'))
  return { load1, memAvailMiB: m ? Number(m[1]) / 1024 : Number.POSITIVE_INFINITY }
}

/** A process and its ancestors (parent, grandparent, ...), up to init or `max` steps. */
export function ancestryOf(pid: number, procRoot = '/proc', max = 64): number[] {
  const chain: number[] = []
  for (let cur: number | null = pid; cur !== null && cur > 1 && chain.length < max; cur = parentOf(cur, procRoot)) chain.push(cur)
  return chain
}

/** The parent of a process, or null if it is gone (or its parent is not in our pid namespace). */
export function parentOf(pid: number, procRoot = '/proc'): number | null {
  try {
    const ppid = parseStat(fs.readFileSync(`${procRoot}/${pid}/stat`, 'latin1'))?.ppid
    return ppid ? ppid : null
  } catch {
    return null
  }
}

/** The real uid of a process, or null if it is gone. */
export function uidOf(pid: number, procRoot = '/proc'): number | null {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(fs.readFileSync(`${procRoot}/${pid}/status`, 'latin1'))
    return m ? Number(m[1]) : null
  } catch {
    return null
  }
}

/** The groups of a process (primary and supplementary), or none if it is gone: FUSE passes only the fsgid. */
export function groupsOf(pid: number, procRoot = '/proc'): number[] {
  try {
    const st = fs.readFileSync(`${procRoot}/${pid}/status`, 'latin1')
    const gid = /^Gid:\s+\d+\s+(\d+)/m.exec(st)
    const groups = /^Groups:\s*(.*)$/m.exec(st)
    return [...(gid ? [Number(gid[1])] : []), ...(groups ? groups[1].trim().split(/\s+/).filter(Boolean).map(Number) : [])]
  } catch {
    return []
  }
}
