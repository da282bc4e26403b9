// Process-exit notifications through pidfds: the moment a client process is gone, its
// tokens come back, whatever it was doing.

import type { Addon, NativeFdPoll } from '../native'

export class ProcessWatcher {
  private readonly polls = new Map<number, NativeFdPoll>()
  private closed = false

  constructor(
    private readonly addon: Pick<Addon, 'pidfdOpen' | 'FdPoll'>,
    private readonly onExit: (pid: number) => void,
  ) {}

  watch(pid: number): void {
    if (this.closed || pid <= 0 || this.polls.has(pid)) return
    const fd = this.addon.pidfdOpen(pid)
    if (fd < 0) {
      // ESRCH: it exited before we could watch it. Report it from the loop, not re-entrantly.
      setImmediate(() => this.exited(pid))
      return
    }
    this.polls.set(pid, new this.addon.FdPoll(fd, () => this.exited(pid)))
  }

  get size(): number {
    return this.polls.size
  }

  private exited(pid: number): void {
    if (this.closed) return
    const p = this.polls.get(pid)
    this.polls.delete(pid)
    p?.close()
    this.onExit(pid)
  }

  close(): void {
    this.closed = true
    for (const p of this.polls.values()) p.close()
    this.polls.clear()
  }
}
