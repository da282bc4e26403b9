// Server side of the control ioctls: read settings and status (anyone who can open the file),
// change settings (root, or a member of the admin group).

import * as fs from 'node:fs'
import * as os from 'node:os'

import { uidOf } from '../io/procfs'
import type { IoctlHandler, IoctlRequest, TokenServer } from '../io/server'
import {
  STATUS_CHUNK_SIZE,
  STATUS_HEADER,
  GROUP_OP_JOIN,
  GROUP_OP_REMOVE,
  GROUP_NAME_MAX,
  GROUP_SIZE,
  MAX_TOKENS,
  STEVED_IOC_GET,
  STEVED_IOC_GROUP,
  STEVED_IOC_SET,
  STEVED_IOC_STATUS,
  configPatch,
  decodeGroup,
  decodeSetting,
  encodeSetting,
  settingByKey,
  settingFromConfig,
  validateSetting,
} from './protocol'
import { minJobsProblem } from '../rules'

const E = os.constants.errno

/** At most this many status snapshots are kept per uid (a reader more gets ESTALE and starts over). */
export const STATUS_SNAPSHOTS_PER_UID = 4
/** And at most this many bytes of them in all, oldest dropped first. */
export const STATUS_SNAPSHOT_BYTES = 16 * 1024 * 1024

/**
 * Status documents being read in chunks, one per reading process, so a multi-chunk read sees
 * one consistent document. Bounded so no user can grow steved's memory by starting reads and
 * never finishing them: per uid, in bytes overall, and a snapshot goes when its reader exits.
 */
export class StatusSnapshots {
  // Insertion order is age order: a fresh snapshot is (re)inserted at the end.
  private readonly byPid = new Map<number, { doc: Buffer; uid: number }>()
  private readonly perUid = new Map<number, number>()
  private total = 0

  get count(): number {
    return this.byPid.size
  }

  get bytes(): number {
    return this.total
  }

  get(pid: number): Buffer | undefined {
    return this.byPid.get(pid)?.doc
  }

  put(pid: number, uid: number, doc: Buffer): void {
    this.drop(pid)
    if ((this.perUid.get(uid) ?? 0) >= STATUS_SNAPSHOTS_PER_UID) {
      // The uid's oldest read goes. Scanning is bounded: no uid may have more than the cap.
      for (const [p, e] of this.byPid) {
        if (e.uid === uid) {
          this.drop(p)
          break
        }
      }
    }
    for (const [p] of this.byPid) {
      if (this.total + doc.length <= STATUS_SNAPSHOT_BYTES) break
      this.drop(p)
    }
    this.byPid.set(pid, { doc, uid })
    this.perUid.set(uid, (this.perUid.get(uid) ?? 0) + 1)
    this.total += doc.length
  }

  drop(pid: number): void {
    const e = this.byPid.get(pid)
    if (!e) return
    this.byPid.delete(pid)
    this.total -= e.doc.length
    const n = this.perUid.get(e.uid)! - 1
    if (n > 0) this.perUid.set(e.uid, n)
    else this.perUid.delete(e.uid)
  }
}

export interface ControlOptions {
  /** The admin group's gid, or null: only root may change settings. */
  adminGid: () => number | null
  /** The status JSON text, freshly built. */
  statusJson: () => string
  /** Where snapshots of it are kept while they are read (a fresh store when absent). */
  snapshots?: StatusSnapshots
  log?: (msg: string) => void
  procRoot?: string
}

/** Groups of a process (primary and supplementary), from /proc: FUSE passes only the fsgid. */
function groupsOf(pid: number, procRoot: string): number[] {
  try {
    const st = fs.readFileSync(`${procRoot}/${pid}/status`, 'latin1')
    const gid = /^Gid:\s+\d+\s+(\d+)/m.exec(st)
    const groups = /^Groups:\s*(.*)$/m.exec(st)
    return [...(gid ? [Number(gid[1])] : []), ...(groups ? groups[1].trim().split(/\s+/).filter(Boolean).map(Number) : [])]
  } catch {
    return []
  }
}

export function controlHandler(server: TokenServer, opts: ControlOptions): IoctlHandler {
  const procRoot = opts.procRoot ?? '/proc'
  const snapshots = opts.snapshots ?? new StatusSnapshots()
  server.onExit((pid) => snapshots.drop(pid))

  const mayChange = (req: IoctlRequest): boolean => {
    if (req.uid === 0) return true
    const admin = opts.adminGid()
    if (admin === null) return false
    return req.gid === admin || groupsOf(req.pid, procRoot).includes(admin)
  }

  return (req) => {
    switch (req.cmd) {
      case STEVED_IOC_GET: {
        if (req.input.length < 16) return { errno: E.EINVAL }
        const { key } = decodeSetting(req.input)
        const def = settingByKey(key)
        if (!def) return { errno: E.EINVAL }
        const snap = server.snapshot()
        let value: number | null
        switch (def.name) {
          case 'tokens':
            value = snap.free
            break
          case 'held':
            value = snap.held
            break
          case 'reserved':
            value = snap.reserved
            break
          case 'waiters':
            value = snap.waiters.length
            break
          case 'admin-group':
            value = opts.adminGid()
            break
          default:
            value = settingFromConfig(def, snap.config)
        }
        return { result: 0, data: encodeSetting(key, value) }
      }
      case STEVED_IOC_SET: {
        if (req.input.length < 16) return { errno: E.EINVAL }
        const { key, value } = decodeSetting(req.input)
        const def = settingByKey(key)
        if (!def || validateSetting(def, value) !== null) return { errno: E.EINVAL }
        if (!mayChange(req)) return { errno: E.EPERM }
        const next = { ...server.snapshot().config, ...configPatch(def, value) }
        if (minJobsProblem(next.minJobs, next.jobs) !== null) return { errno: E.EINVAL }
        server.configure(configPatch(def, value))
        opts.log?.(`pid ${req.pid} (uid ${req.uid}) set ${def.name} to ${value ?? 'none'}`)
        return { result: 0 }
      }
      case STEVED_IOC_GROUP: {
        if (req.input.length < GROUP_SIZE) return { errno: E.EINVAL }
        // The name must end with its NUL inside the record: at most GROUP_NAME_MAX bytes.
        if (req.input.indexOf(0, 24) < 0 || req.input.indexOf(0, 24) > 24 + GROUP_NAME_MAX) return { errno: E.EINVAL }
        const g = decodeGroup(req.input)
        if (!g.name || (g.limit !== null && !(Number.isInteger(g.limit) && g.limit >= 1 && g.limit <= MAX_TOKENS))) return { errno: E.EINVAL }
        // Ownership (docs/control.md): a group belongs to the uid that created it; only that uid
        // or an admin (root, the admin group) may join trees to it, change its limit or dissolve
        // it. Users move only their own processes, and never out of a group someone else owns.
        const admin = mayChange(req)
        if (g.op === GROUP_OP_JOIN) {
          const owner = uidOf(g.pid, procRoot)
          if (owner === null) return { errno: E.ESRCH }
          const target = server.pool.groupInfo(g.name)
          if (!admin) {
            if (owner !== req.uid) return { errno: E.EPERM }
            if (target && target.owner !== req.uid) return { errno: E.EPERM }
            const current = server.groupOfProcess(g.pid)
            if (current && current.owner !== req.uid) return { errno: E.EPERM }
          } else if (target && target.owner !== 0 && target.owner !== req.uid && target.owner !== owner) {
            // An admin brings another uid's processes into a group a user made: start it afresh,
            // so nobody can squat a name an admin will use and have their trees eat its cap.
            server.group(g.name, null, null)
            opts.log?.(`group ${g.name} of uid ${target.owner} dissolved: pid ${req.pid} (uid ${req.uid}) starts it afresh`)
          }
          server.group(g.name, g.pid, g.limit, req.uid)
          opts.log?.(`pid ${req.pid} (uid ${req.uid}) put the tree of pid ${g.pid} into group ${g.name} (limit ${g.limit ?? 'none'})`)
          return { result: 0 }
        }
        if (g.op === GROUP_OP_REMOVE) {
          const known = server.pool.groupInfo(g.name)
          if (!known) return { errno: E.ENOENT }
          if (!admin && known.owner !== req.uid) return { errno: E.EPERM }
          server.group(g.name, null, null)
          opts.log?.(`pid ${req.pid} (uid ${req.uid}) dissolved group ${g.name}`)
          return { result: 0 }
        }
        return { errno: E.EINVAL }
      }
      case STEVED_IOC_STATUS: {
        if (req.input.length < 4) return { errno: E.EINVAL }
        const offset = req.input.readUInt32LE(0)
        let doc = snapshots.get(req.pid)
        if (offset === 0) {
          doc = Buffer.from(opts.statusJson(), 'utf8')
          snapshots.put(req.pid, req.uid, doc)
        } else if (!doc) {
          // Dropped (too many reads at once) or never taken: a chunk of a fresh document would
          // not fit the earlier ones, so the reader must start over.
          return { errno: E.ESTALE }
        }
        const chunk = doc.subarray(offset, offset + STATUS_CHUNK_SIZE - STATUS_HEADER)
        const out = Buffer.alloc(STATUS_CHUNK_SIZE)
        out.writeUInt32LE(doc.length, 0)
        out.writeUInt32LE(chunk.length, 4)
        chunk.copy(out, STATUS_HEADER)
        if (offset + chunk.length >= doc.length) snapshots.drop(req.pid)
        return { result: 0, data: out }
      }
      default:
        return { errno: E.ENOTTY }
    }
  }
}
