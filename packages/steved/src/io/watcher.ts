// Process-exit notifications through pidfds: the moment a client process is gone, its
// tokens come back, whatever it was doing.

import * as os from 'node:os'
import * as util from 'node:util'

import type { Addon, NativeFdPoll } from '../native'

const ESRCH = os.constants.errno.ESRCH

/** How often processes we could not get a pidfd for are checked, in ms. */
export const FALLBACK_POLL_MS = 500

export class ProcessWatcher {
  private readonly polls = new Map<number, NativeFdPoll>()
  /**
   * Processes watched by polling because pidfd_open failed for another reason than ESRCH
   * (EMFILE, ENFILE, ENOMEM): they are alive, and must keep their tokens until they exit.
   */
  private readonly polled = new Set<number>()
  private pollTimer: NodeJS.Timeout | null = null
  private closed = false

  constructor(
    private readonly addon: Pick<Addon, 'pidfdOpen' | 'FdPoll'>,
    private readonly onExit: (pid: number) => void,
    private readonly warn: (msg: string) => void = () => {},
    private readonly alive: (pid: number) => boolean = processExists,
  ) {}

  watch(pid: number): void {
    if (this.closed || pid <= 0 || this.polls.has(pid) || this.polled.has(pid)) return
    const fd = this.addon.pidfdOpen(pid)
    if (fd === -ESRCH) {
      // It exited before we could watch it. Report it from the loop, not re-entrantly.
      setImmediate(() => this.exited(pid))
      return
    }
    if (fd < 0) {
      // Only ESRCH means gone. Out of descriptors, a live holder treated as exited would lose
      // its tokens to others and the pool would over-commit: watch it by polling instead.
      if (this.polled.size === 0) {
        this.warn(`cannot watch pid ${pid} with a pidfd (${util.getSystemErrorName(fd)}); checking it and any others every ${FALLBACK_POLL_MS} ms until descriptors are free again (raise LimitNOFILE / ulimit -n)`)
      }
      this.polled.add(pid)
      this.armPolling()
      return
    }
    this.polls.set(pid, new this.addon.FdPoll(fd, () => this.exited(pid)))
  }

  /** Processes watched, by pidfd or by polling. */
  get size(): number {
    return this.polls.size + this.polled.size
  }

  /** Processes watched by polling for want of a pidfd. */
  get pollingCount(): number {
    return this.polled.size
  }

  private armPolling(): void {
    if (this.pollTimer || this.closed) return
    this.pollTimer = setInterval(() => this.pollOnce(), FALLBACK_POLL_MS)
    this.pollTimer.unref()
  }

  private pollOnce(): void {
    for (const pid of [...this.polled]) {
      if (this.closed) return
      const fd = this.addon.pidfdOpen(pid)
      if (fd >= 0) {
        // Descriptors are back: from here on the kernel tells us.
        this.polled.delete(pid)
        this.polls.set(pid, new this.addon.FdPoll(fd, () => this.exited(pid)))
      } else if (fd === -ESRCH || !this.alive(pid)) {
        this.exited(pid)
      }
    }
    if (this.polled.size === 0 && this.pollTimer) {
      clearInterval(this.pollTimer)
      this.pollTimer = null
      this.warn('every client process is watched by a pidfd again')
    }
  }

  private exited(pid: number): void {
    if (this.closed) return
    const p = this.polls.get(pid)
    this.polls.delete(pid)
    this.polled.delete(pid)
    p?.close()
    this.onExit(pid)
  }

  close(): void {
    this.closed = true
    if (this.pollTimer) clearInterval(this.pollTimer)
    this.pollTimer = null
    for (const p of this.polls.values()) p.close()
    this.polls.clear()
    this.polled.clear()
  }
}

/** kill(pid, 0): needs no descriptor. EPERM means it exists (another user's process). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}
