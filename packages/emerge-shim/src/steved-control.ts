// A client of steved's control plane, written from its documentation (docs/control.md, "The
// ioctl protocol"): the requests go to the jobserver file or device itself, so they work inside
// Portage's sandbox wherever the jobserver is reachable. Only what the shim needs: put a process
// tree into a capped group, and read the status document. Another jobserver (a FIFO, steve,
// guildmaster) answers ENOTTY, which is reported as "not steved".
import * as fs from 'node:fs'
import * as os from 'node:os'
import { loadNative, systemError, type Native } from 'jobclient'

const IOC_WRITE = 1
const IOC_READ = 2
const ioc = (dir: number, nr: number, size: number): number => ((dir << 30) | (size << 16) | (0x6a << 8) | nr) >>> 0

const STATUS_CHUNK = 8192
const STATUS_HEADER = 8
/** _IOWR('j', 3, 8192): in u32 offset; out u32 total, u32 length, JSON bytes. */
export const STEVED_IOC_STATUS = ioc(IOC_READ | IOC_WRITE, 3, STATUS_CHUNK)
const GROUP_SIZE = 256
/** _IOW('j', 4, 256): u32 op, u32 flags, u32 pid, u32 0, f64 limit, NUL-terminated name. */
export const STEVED_IOC_GROUP = ioc(IOC_WRITE, 4, GROUP_SIZE)
const GROUP_OP_JOIN = 1
const FLAG_UNSET = 1
const GROUP_NAME_MAX = GROUP_SIZE - 24 - 1

/** The parts of steved's status document (schema version 1) the shim reads. */
export interface StevedStatus {
  server: { pid: number; version: string; transport: 'fuse' | 'cuse'; path: string }
  pool: { jobs: number; free: number; held: number; reserved: number; waiting: number }
  settings: { loadAverage: number | null; minMemoryAvailMiB: number | null; perProcessLimit: number | null }
  lastSample: { load1: number; memAvailMiB: number } | null
  holders: Array<{ pid: number; cmdline: string; tokens: number; heldForSeconds: number[] }>
  waiters: Array<{ pid: number; how: string; waitingForSeconds: number; reason: string }>
  groups: Array<{ name: string; limit: number | null; roots: number[]; members: number[]; tokens: number }>
}

export function encodeGroupJoin(name: string, pid: number, limit: number | null): Buffer {
  const n = Buffer.from(name, 'utf8')
  if (n.length === 0 || n.length > GROUP_NAME_MAX) throw new RangeError(`group names are 1 to ${GROUP_NAME_MAX} bytes`)
  const b = Buffer.alloc(GROUP_SIZE)
  b.writeUInt32LE(GROUP_OP_JOIN, 0)
  b.writeUInt32LE(limit === null ? FLAG_UNSET : 0, 4)
  b.writeUInt32LE(pid, 8)
  b.writeDoubleLE(limit ?? 0, 16)
  n.copy(b, 24)
  return b
}

/** Control requests on one open jobserver path. close() is idempotent. */
export class StevedControl {
  readonly #native: Native
  #fd: number | null

  /** Opens `path` read-only and non-blocking (the way stevectl does). Throws Node's fs errors. */
  constructor(readonly path: string, native: Native = loadNative()) {
    this.#native = native
    this.#fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  }

  #ioctl(request: number, buf: Buffer): number {
    if (this.#fd === null) throw new Error('StevedControl is closed')
    return this.#native.ioctl(this.#fd, request, buf)
  }

  /**
   * Put the process tree under `pid` into group `name` capped at `limit` tokens. Returns 0, or
   * -errno: -ENOTTY (not steved), -ESRCH (no such process), -EPERM (another user's process).
   */
  groupJoin(name: string, pid: number, limit: number | null): number {
    const r = this.#ioctl(STEVED_IOC_GROUP, encodeGroupJoin(name, pid, limit))
    return r < 0 ? r : 0
  }

  /** steved's status document, or null when this is not steved. Throws other system errors. */
  status(): StevedStatus | null {
    const parts: Buffer[] = []
    let offset = 0
    for (;;) {
      const buf = Buffer.alloc(STATUS_CHUNK)
      buf.writeUInt32LE(offset, 0)
      const r = this.#ioctl(STEVED_IOC_STATUS, buf)
      if (r === -os.constants.errno.ENOTTY || r === -os.constants.errno.EINVAL) return null
      if (r < 0) throw systemError(r, 'ioctl', this.path)
      const total = buf.readUInt32LE(0)
      const n = buf.readUInt32LE(4)
      parts.push(Buffer.from(buf.subarray(STATUS_HEADER, STATUS_HEADER + n)))
      offset += n
      if (n === 0 || offset >= total) break
    }
    return JSON.parse(Buffer.concat(parts).toString('utf8')) as StevedStatus
  }

  close(): void {
    if (this.#fd === null) return
    const fd = this.#fd
    this.#fd = null
    try {
      fs.closeSync(fd)
    } catch {
      // Nothing to retry: the fd is gone either way on Linux.
    }
  }
}
