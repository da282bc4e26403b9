// Which processes are "the build" of a package job: pure functions over a process table,
// table-tested in test/tree.test.ts.
//
// The job's token must stay held while any process of the build runs (DESIGN.md: after a
// SIGKILL of emerge its build processes keep running for about a second). When the job ends
// (or emerge goes away) the holder takes a snapshot of the build's processes and gives the
// token back only when none of them, nor any child they start, is left:
//   - the phases' ebuild.sh processes (the roots the phases attached) and their descendants;
//   - processes started with PORTAGE_BUILDDIR=<this job's> in their environment: that finds
//     a build's background processes whose parent already exited (reparented to init);
//   - but only in the sessions of the roots: a daemon that called setsid() (sccache, a gradle
//     daemon) has left the build and must not keep the token for its idle timeout.
// Processes that start later and descend from none of those (the merge phases emerge runs
// next, another job) are not the build's.
import type { ProcInfo } from './procfs'

/** A process across pid reuse. */
export interface ProcRef {
  pid: number
  start: number
}

export type ProcTable = ReadonlyMap<number, ProcInfo>

export function tableOf(list: readonly ProcInfo[]): Map<number, ProcInfo> {
  return new Map(list.map((p) => [p.pid, p]))
}

function exited(p: ProcInfo): boolean {
  return p.state === 'Z' || p.state === 'X'
}

/** The process still runs (same pid, same start time, not a zombie). */
export function isAlive(table: ProcTable, ref: ProcRef): boolean {
  const p = table.get(ref.pid)
  return p !== undefined && p.start === ref.start && !exited(p)
}

/**
 * Processes between a phase and emerge that live only as long as the phase: the sandbox
 * wrapper and the pid namespace init of FEATURES=pid-sandbox.
 */
export const PHASE_WRAPPERS: readonly string[] = ['sandbox', 'pid-ns-init']

/**
 * The process that runs the job's phases ("emerge"): the nearest ancestor of the phase's
 * ebuild.sh that is not a per-phase wrapper. With Python's forkserver start method this is
 * the forkserver, which exits when emerge does. Null if the chain is broken (the phase's parent
 * already exited) or reaches init.
 */
export function supervisorOf(table: ProcTable, rootPid: number, wrappers: readonly string[] = PHASE_WRAPPERS): ProcInfo | null {
  const seen = new Set<number>()
  let p = table.get(rootPid)
  while (p && !seen.has(p.pid)) {
    seen.add(p.pid)
    const parent = table.get(p.ppid)
    if (!parent || parent.pid <= 1) return null
    if (!wrappers.includes(parent.comm)) return parent
    p = parent
  }
  return null
}

/** Whether one of p's ancestors (not p itself) satisfies `isIn`. */
function hasAncestor(table: ProcTable, p: ProcInfo, isIn: (q: ProcInfo) => boolean): boolean {
  const seen = new Set<number>([p.pid])
  let q = table.get(p.ppid)
  while (q && !seen.has(q.pid)) {
    if (isIn(q)) return true
    seen.add(q.pid)
    q = table.get(q.ppid)
  }
  return false
}

function refSet(refs: readonly ProcRef[]): (p: ProcInfo) => boolean {
  const m = new Map(refs.map((r) => [r.pid, r.start]))
  return (p) => m.get(p.pid) === p.start
}

export interface SnapshotOptions {
  /** The ebuild.sh processes of the job's phases (only the live ones count). */
  roots: readonly ProcRef[]
  /** Sessions of the roots; build processes outside them have detached. */
  sessions: ReadonlySet<number>
  /** The process was started with this job's PORTAGE_BUILDDIR. */
  marked: (p: ProcInfo) => boolean
  /** Never part of the build (the holder itself). */
  exclude: ReadonlySet<number>
}

/** The build's processes now, when the job ends or emerge goes away. */
export function snapshotJob(table: ProcTable, o: SnapshotOptions): ProcRef[] {
  const roots = o.roots.filter((r) => isAlive(table, r) && !o.exclude.has(r.pid))
  const isRoot = refSet(roots)
  const out: ProcRef[] = roots.map((r) => ({ pid: r.pid, start: r.start }))
  for (const p of table.values()) {
    if (exited(p) || o.exclude.has(p.pid) || isRoot(p) || !o.sessions.has(p.sid)) continue
    if (o.marked(p) || hasAncestor(table, p, isRoot)) out.push({ pid: p.pid, start: p.start })
  }
  return out
}

/**
 * What is left of a snapshot: its members that still run, and every process (in the roots'
 * sessions) that descends from one of them, such as a make started by a still-running
 * recipe shell. Empty: the build is gone.
 */
export function remaining(table: ProcTable, members: readonly ProcRef[], sessions: ReadonlySet<number>, exclude: ReadonlySet<number>): ProcRef[] {
  const alive = members.filter((m) => isAlive(table, m) && !exclude.has(m.pid))
  const isMember = refSet(alive)
  const out: ProcRef[] = alive.map((m) => ({ pid: m.pid, start: m.start }))
  for (const p of table.values()) {
    if (exited(p) || exclude.has(p.pid) || isMember(p) || !sessions.has(p.sid)) continue
    if (hasAncestor(table, p, isMember)) out.push({ pid: p.pid, start: p.start })
  }
  return out
}
