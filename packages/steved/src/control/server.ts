// Server side of the control ioctls: decoding them and checking their form. What they ask of
// the pool (read a setting, change one, put a process tree into a group) goes to the core as a
// `control` input, which decides who may do it (core/pool.ts onControl); status documents are
// served here, in chunks, from bounded snapshots.

import * as os from 'node:os'

import type { Reading } from '../core'
import type { ControlDecoded, ControlPlane, IoctlRequest } from '../io/server'
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
  poolField,
  validateSetting,
} from './protocol'

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
  /** A process's parent, or null when it is gone (default: none known; steved passes /proc's). */
  parentOf?: (pid: number) => number | null
}

/** The counts a GET reads, by setting name; the writable settings read the pool configuration. */
const COUNTS: Record<string, Reading> = { tokens: 'free', held: 'held', reserved: 'reserved', waiters: 'waiters' }

export function controlPlane(opts: ControlOptions): ControlPlane {
  const snapshots = opts.snapshots ?? new StatusSnapshots()

  const decode = (req: IoctlRequest): ControlDecoded => {
    switch (req.cmd) {
      case STEVED_IOC_GET: {
        if (req.input.length < 16) return { errno: E.EINVAL }
        const { key } = decodeSetting(req.input)
        const def = settingByKey(key)
        if (!def) return { errno: E.EINVAL }
        // The admin group is steved's, not the pool's: answered here.
        if (def.name === 'admin-group') return { result: 0, data: encodeSetting(key, opts.adminGid()) }
        const count = COUNTS[def.name]
        if (count !== undefined) return { request: { op: 'get', what: count }, encode: (v) => encodeSetting(key, v) }
        const { field, scale } = poolField(def)
        return { request: { op: 'get', what: field }, encode: (v) => encodeSetting(key, v === null ? null : v / scale) }
      }
      case STEVED_IOC_SET: {
        if (req.input.length < 16) return { errno: E.EINVAL }
        const { key, value } = decodeSetting(req.input)
        const def = settingByKey(key)
        if (!def || validateSetting(def, value) !== null) return { errno: E.EINVAL }
        return { request: { op: 'set', patch: configPatch(def, value), setting: def.name, value } }
      }
      case STEVED_IOC_GROUP: {
        if (req.input.length < GROUP_SIZE) return { errno: E.EINVAL }
        // The name must end with its NUL inside the record: at most GROUP_NAME_MAX bytes.
        if (req.input.indexOf(0, 24) < 0 || req.input.indexOf(0, 24) > 24 + GROUP_NAME_MAX) return { errno: E.EINVAL }
        const g = decodeGroup(req.input)
        if (!g.name || (g.limit !== null && !(Number.isInteger(g.limit) && g.limit >= 1 && g.limit <= MAX_TOKENS))) return { errno: E.EINVAL }
        if (g.op === GROUP_OP_JOIN) {
          // The caller itself, or its parent, as we see them: a caller in another pid namespace
          // knows neither. The root's owner is looked up by the io layer: rootOwner is filled there.
          const root = g.pid === 'caller' ? req.pid : g.pid === 'parent' ? (opts.parentOf?.(req.pid) ?? null) : g.pid
          if (root === null || root <= 0) return { errno: E.ESRCH }
          return { request: { op: 'join', name: g.name, root, limit: g.limit, rootOwner: null } }
        }
        if (g.op === GROUP_OP_REMOVE) return { request: { op: 'remove', name: g.name } }
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

  return { decode, adminGid: opts.adminGid, exited: (pid) => snapshots.drop(pid) }
}
