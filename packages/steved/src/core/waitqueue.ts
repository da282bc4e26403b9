// The wait queue: one FIFO order over parked reads and sleeping pollers, served in that order
// among the waiters whose process and group are under their caps.
//
// Skipping capped waiters must not cost a scan of them (a user can park thousands in a group
// capped at one). So waiters are kept per process in arrival order; a process that is under
// its own cap is offered, keyed by its oldest waiter, to a heap: its group's heap if it has a
// group, else the top heap; a group under its cap is offered to the top heap keyed by the
// smallest key in its own heap. The first servable waiter is then the head of the process at
// the top: O(log n) per grant, whatever the number of capped waiters.
//
// Heap entries are never searched for: one that no longer matches (the head was served, the
// cap was reached, the process left) is dropped when it surfaces, and the heaps are rebuilt
// when dropped-to-be entries outnumber the waiters, so memory stays bounded too.

export interface Waiter {
  how: 'read' | 'poll'
  /** Request id for reads; -1 for pollers (they are answered at once and notified later). */
  req: number
  fh: number
  pid: number
  since: number
  /** Arrival order. */
  seq: number
}

/** What the queue asks the pool about caps; each answer must be O(1). */
export interface Caps {
  /** The process is under its per-process cap. */
  procOpen(pid: number): boolean
  /** The group a process belongs to, or null. */
  groupOf(pid: number): string | null
  /** The group is under its cap. */
  groupOpen(name: string): boolean
}

interface Entry {
  seq: number
  pid: number
  /** In the top heap: the group this entry stands for, or null for an ungrouped process. */
  group: string | null
}

/** A binary min-heap of entries by seq; `tally.n` counts the entries of all heaps sharing it. */
class Heap {
  private readonly a: Entry[] = []

  constructor(private readonly tally: { n: number }) {}

  get size(): number {
    return this.a.length
  }

  peek(): Entry | undefined {
    return this.a[0]
  }

  push(e: Entry): void {
    const a = this.a
    this.tally.n++
    a.push(e)
    let i = a.length - 1
    while (i > 0) {
      const up = (i - 1) >> 1
      if (a[up].seq <= e.seq) break
      a[i] = a[up]
      i = up
    }
    a[i] = e
  }

  pop(): Entry | undefined {
    const a = this.a
    const top = a[0]
    const last = a.pop()
    if (top) this.tally.n--
    if (a.length > 0 && last) {
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        if (l >= a.length) break
        const c = l + 1 < a.length && a[l + 1].seq < a[l].seq ? l + 1 : l
        if (a[c].seq >= last.seq) break
        a[i] = a[c]
        i = c
      }
      a[i] = last
    }
    return top
  }
}

interface GroupHeap {
  heap: Heap
  /** Seq of this group's live entry in the top heap, if any. */
  offered: number | null
}

const pollKey = (fh: number, pid: number): string => `${fh}/${pid}`

export class WaitQueue {
  private nextSeq = 1
  private count = 0
  /** Each process's waiters in arrival order (Map keeps insertion order). */
  private readonly byPid = new Map<number, Map<number, Waiter>>()
  private readonly reads = new Map<number, Waiter>()
  private readonly polls = new Map<string, Waiter>()
  private readonly pollsByFh = new Map<number, Set<Waiter>>()
  /** Entries in all heaps, live or stale. */
  private tally = { n: 0 }
  private top = new Heap(this.tally)
  private groupHeaps = new Map<string, GroupHeap>()
  /** Seq of each process's live entry (in the top heap or its group's heap). */
  private offered = new Map<number, number>()

  constructor(private readonly caps: Caps) {}

  get size(): number {
    return this.count
  }

  add(how: 'read' | 'poll', req: number, fh: number, pid: number, since: number): Waiter {
    const w: Waiter = { how, req, fh, pid, since, seq: this.nextSeq++ }
    let mine = this.byPid.get(pid)
    if (!mine) {
      mine = new Map()
      this.byPid.set(pid, mine)
    }
    mine.set(w.seq, w)
    this.count++
    if (how === 'read') this.reads.set(req, w)
    else {
      this.polls.set(pollKey(fh, pid), w)
      let s = this.pollsByFh.get(fh)
      if (!s) {
        s = new Set()
        this.pollsByFh.set(fh, s)
      }
      s.add(w)
    }
    if (mine.size === 1) this.offer(pid)
    return w
  }

  remove(w: Waiter): void {
    const mine = this.byPid.get(w.pid)
    if (!mine || mine.get(w.seq) !== w) return
    const wasHead = this.head(w.pid) === w
    mine.delete(w.seq)
    if (mine.size === 0) this.byPid.delete(w.pid)
    this.count--
    if (w.how === 'read') this.reads.delete(w.req)
    else {
      this.polls.delete(pollKey(w.fh, w.pid))
      const s = this.pollsByFh.get(w.fh)
      s?.delete(w)
      if (s && s.size === 0) this.pollsByFh.delete(w.fh)
    }
    if (wasHead) this.offer(w.pid)
    this.compactIfStale()
  }

  has(w: Waiter): boolean {
    return this.byPid.get(w.pid)?.get(w.seq) === w
  }

  read(req: number): Waiter | undefined {
    return this.reads.get(req)
  }

  poll(fh: number, pid: number): Waiter | undefined {
    return this.polls.get(pollKey(fh, pid))
  }

  pollsOn(fh: number): Waiter[] {
    return [...(this.pollsByFh.get(fh) ?? [])]
  }

  of(pid: number): Waiter[] {
    return [...(this.byPid.get(pid)?.values() ?? [])]
  }

  /** Every waiter in arrival order (for reports; O(n log n)). */
  ordered(): Waiter[] {
    const all: Waiter[] = []
    for (const m of this.byPid.values()) for (const w of m.values()) all.push(w)
    return all.sort((a, b) => a.seq - b.seq)
  }

  /**
   * A process's cap or group cap may have opened (it or a fellow member gave something back),
   * or its oldest waiter changed: offer it, and its group, again.
   */
  changed(pid: number, group: string | null): void {
    this.offer(pid)
    if (group !== null) this.offerGroup(group)
  }

  /** Caps or group memberships changed for many processes at once: offer everyone afresh. */
  reset(): void {
    this.tally = { n: 0 }
    this.top = new Heap(this.tally)
    this.groupHeaps = new Map()
    this.offered = new Map()
    for (const pid of this.byPid.keys()) this.offer(pid)
  }

  /** The oldest waiter whose process and group are under their caps; it stays queued. */
  first(): Waiter | undefined {
    for (;;) {
      const e = this.top.peek()
      if (!e) return undefined
      if (e.group === null) {
        const h = this.head(e.pid)
        if (this.offered.get(e.pid) === e.seq && h?.seq === e.seq && this.caps.groupOf(e.pid) === null && this.caps.procOpen(e.pid)) return h
        this.top.pop()
        if (this.offered.get(e.pid) === e.seq) this.offered.delete(e.pid)
        continue
      }
      const gh = this.groupHeaps.get(e.group)
      const inner = gh && gh.offered === e.seq && this.caps.groupOpen(e.group) ? this.groupTop(e.group, gh) : undefined
      if (gh && inner && inner.seq === e.seq) return this.head(inner.pid)
      this.top.pop()
      if (gh && gh.offered === e.seq) {
        gh.offered = null
        this.offerGroup(e.group)
      }
    }
  }

  private head(pid: number): Waiter | undefined {
    const mine = this.byPid.get(pid)
    return mine ? mine.values().next().value : undefined
  }

  private offer(pid: number): void {
    const h = this.head(pid)
    if (!h || this.offered.get(pid) === h.seq || !this.caps.procOpen(pid)) return
    this.offered.set(pid, h.seq)
    const g = this.caps.groupOf(pid)
    if (g === null) {
      this.top.push({ seq: h.seq, pid, group: null })
      return
    }
    let gh = this.groupHeaps.get(g)
    if (!gh) {
      gh = { heap: new Heap(this.tally), offered: null }
      this.groupHeaps.set(g, gh)
    }
    gh.heap.push({ seq: h.seq, pid, group: null })
    this.offerGroup(g)
  }

  private offerGroup(name: string): void {
    const gh = this.groupHeaps.get(name)
    if (!gh || !this.caps.groupOpen(name)) return
    const m = this.groupTop(name, gh)
    if (!m || gh.offered === m.seq) return
    gh.offered = m.seq
    this.top.push({ seq: m.seq, pid: m.pid, group: name })
  }

  /** The live entry with the smallest seq in a group's heap, dropping stale ones above it. */
  private groupTop(name: string, gh: GroupHeap): Entry | undefined {
    for (;;) {
      const e = gh.heap.peek()
      if (!e) {
        if (gh.offered === null) this.groupHeaps.delete(name)
        return undefined
      }
      if (this.offered.get(e.pid) === e.seq && this.head(e.pid)?.seq === e.seq && this.caps.groupOf(e.pid) === name && this.caps.procOpen(e.pid)) return e
      gh.heap.pop()
      if (this.offered.get(e.pid) === e.seq) this.offered.delete(e.pid)
    }
  }

  private compactIfStale(): void {
    // Each process has at most one live entry, each group one in the top heap.
    if (this.tally.n > 4 * this.count + 64) this.reset()
  }
}
