// /proc/PID/stat, read one way for the whole project (steved's ancestry lookups, the emerge
// shim's view of a build's process tree).

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
