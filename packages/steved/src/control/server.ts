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
  GROUP_SIZE,
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

const E = os.constants.errno

export interface ControlOptions {
  /** The admin group's gid, or null: only root may change settings. */
  adminGid: () => number | null
  /** The status JSON text, freshly built. */
  statusJson: () => string
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
  // Status snapshots per caller, so a multi-chunk read sees one consistent document.
  const cached = new Map<number, Buffer>()

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
        server.configure(configPatch(def, value))
        opts.log?.(`pid ${req.pid} (uid ${req.uid}) set ${def.name} to ${value ?? 'none'}`)
        return { result: 0 }
      }
      case STEVED_IOC_GROUP: {
        if (req.input.length < GROUP_SIZE) return { errno: E.EINVAL }
        const g = decodeGroup(req.input)
        if (!g.name || (g.limit !== null && !(Number.isInteger(g.limit) && g.limit >= 1))) return { errno: E.EINVAL }
        if (g.op === GROUP_OP_JOIN) {
          // A cap only restricts, but nobody may cap someone else's processes: the tree's root
          // must belong to the caller's uid (or the caller may change settings anyway).
          const owner = uidOf(g.pid, procRoot)
          if (owner === null) return { errno: E.ESRCH }
          if (owner !== req.uid && !mayChange(req)) return { errno: E.EPERM }
          server.group(g.name, g.pid, g.limit)
          opts.log?.(`pid ${req.pid} put the tree of pid ${g.pid} into group ${g.name} (limit ${g.limit ?? 'none'})`)
          return { result: 0 }
        }
        if (g.op === GROUP_OP_REMOVE) {
          const known = server.snapshot().groups.find((x) => x.name === g.name)
          if (!known) return { errno: E.ENOENT }
          const owners = known.roots.map((r) => uidOf(r, procRoot))
          if (!mayChange(req) && owners.some((u) => u !== null && u !== req.uid)) return { errno: E.EPERM }
          server.group(g.name, null, null)
          return { result: 0 }
        }
        return { errno: E.EINVAL }
      }
      case STEVED_IOC_STATUS: {
        if (req.input.length < 4) return { errno: E.EINVAL }
        const offset = req.input.readUInt32LE(0)
        if (offset === 0 || !cached.has(req.pid)) cached.set(req.pid, Buffer.from(opts.statusJson(), 'utf8'))
        const doc = cached.get(req.pid)!
        const chunk = doc.subarray(offset, offset + STATUS_CHUNK_SIZE - STATUS_HEADER)
        const out = Buffer.alloc(STATUS_CHUNK_SIZE)
        out.writeUInt32LE(doc.length, 0)
        out.writeUInt32LE(chunk.length, 4)
        chunk.copy(out, STATUS_HEADER)
        if (offset + chunk.length >= doc.length) cached.delete(req.pid)
        return { result: 0, data: out }
      }
      default:
        return { errno: E.ENOTTY }
    }
  }
}
