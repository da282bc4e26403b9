// steved's control plane, the one copy every tool uses (steved's server side, stevectl, the
// emerge shim): the ioctl codec, the settings table, the status document's type and schema, and
// a client. The requests go to the jobserver file or device itself, so they work wherever it is
// visible (containers, chroots, Portage's sandbox). Documented in docs/control.md.
//
// Every request uses the restricted ioctl encoding (_IOC direction and size), which both FUSE
// regular files and CUSE devices support without a retry protocol. This module is pure
// TypeScript apart from the client's ioctl(2), which goes through jobclient's own addon.

import * as fs from 'node:fs'
import * as os from 'node:os'

import { systemError, type SystemError } from './errors'
import { loadNative, type Native } from './native'
import type { Status } from './steved-status'

const IOC_WRITE = 1
const IOC_READ = 2
const ioc = (dir: number, nr: number, size: number): number => ((dir << 30) | (size << 16) | (0x6a << 8) | nr) >>> 0 // type 'j'

/** A setting record: u32 key, u32 flags, f64 value (little-endian). */
export const SETTING_SIZE = 16
/** Status chunks: in u32 offset; out u32 total length, u32 chunk length, then JSON bytes. */
export const STATUS_CHUNK_SIZE = 8192
export const STATUS_HEADER = 8

/** Read a setting or a pool figure: in {key}, out {key, flags, value}. */
export const STEVED_IOC_GET = ioc(IOC_READ | IOC_WRITE, 0x01, SETTING_SIZE)
/** Change a setting: in {key, flags, value}. Needs root or the admin group (EPERM otherwise). */
export const STEVED_IOC_SET = ioc(IOC_WRITE, 0x02, SETTING_SIZE)
/** The status JSON, in chunks; offset 0 takes a fresh snapshot for this open file. */
export const STEVED_IOC_STATUS = ioc(IOC_READ | IOC_WRITE, 0x03, STATUS_CHUNK_SIZE)

/** Group requests: u32 op, u32 flags, u32 pid, u32 0, f64 limit, then a NUL-terminated name. */
export const GROUP_SIZE = 256
export const GROUP_NAME_MAX = GROUP_SIZE - 24 - 1
/** Put the process tree under `pid` into the named group, capped at `limit` tokens. */
export const GROUP_OP_JOIN = 1
/** Dissolve the named group. */
export const GROUP_OP_REMOVE = 2
export const STEVED_IOC_GROUP = ioc(IOC_WRITE, 0x04, GROUP_SIZE)

/** flags bit: the setting has no value (no load limit, no memory floor, ...). */
export const FLAG_UNSET = 1
/**
 * flags bits of a group join: the root is the calling process itself, or its parent, as steved
 * sees them (the pid field is then 0). A caller in another pid namespace (Portage's
 * FEATURES=pid-sandbox, a container) knows neither pid as steved does: its own `$$` is a pid of
 * its namespace.
 */
export const GROUP_FLAG_CALLER = 2
export const GROUP_FLAG_PARENT = 4

/**
 * Bounds shared by the command line, the TOML file, SIGHUP and STEVED_IOC_SET. Token counts
 * stay far below where a double stops counting exactly; timeouts stay below Node's timer
 * limit (2^31 - 1 ms, about 24.8 days), past which a timer would fire every millisecond.
 */
export const MAX_TOKENS = 1_000_000
export const MAX_TIMEOUT_SECONDS = 86_400

export type SettingUnit = 'count' | 'load' | 'seconds' | 'MiB' | 'percent'

/** How a writable setting appears in steved: its option, its pool field and its status key. */
export interface DaemonSetting {
  /** The short option (steve's), if any. */
  short?: string
  /** The option argument's name in --help. */
  arg: string
  /** steved --help's words, when they say more than `description`. */
  help?: string
  /** The pool configuration field (core PoolConfig) behind it. */
  field: string
  /** field = value * scale (seconds to ms). */
  scale: number
  /** Its key in the status document's `settings`. */
  status: string
}

export interface SettingDef {
  key: number
  /** The name used by steved's options, stevectl's --get-X/--set-X and the TOML file. */
  name: string
  unit: SettingUnit
  /** Settable at runtime (the rest are read-only figures). */
  writable: boolean
  /** Whether "none" is a valid value. */
  nullable: boolean
  /** Smallest allowed value. */
  min: number
  /** Largest allowed value. */
  max: number
  integer: boolean
  description: string
  /** Present on the writable ones: everything else follows from this row. */
  daemon?: DaemonSetting
}

/**
 * The settings table. Adding a setting is one row here plus its meaning in the pool (core):
 * steved's options and TOML keys, the ioctl mapping, stevectl's --get/--set and the status
 * document's `settings` (with its schema) are all made from it.
 */
export const SETTINGS = [
  { key: 0, name: 'jobs', unit: 'count', writable: true, nullable: false, min: 1, max: MAX_TOKENS, integer: true, description: 'tokens in the pool',
    daemon: { short: '-j', arg: 'n', field: 'jobs', scale: 1, status: 'jobs' } },
  { key: 1, name: 'min-jobs', unit: 'count', writable: true, nullable: false, min: 0, max: MAX_TOKENS, integer: true, description: 'tokens that may be out whatever the load',
    daemon: { short: '-m', arg: 'n', field: 'minJobs', scale: 1, status: 'minJobs' } },
  { key: 2, name: 'load-average', unit: 'load', writable: true, nullable: true, min: Number.MIN_VALUE, max: Number.MAX_VALUE, integer: false, description: 'grant only while the 1-minute load average is at most this',
    daemon: { short: '-l', arg: 'load', help: 'hand out tokens only while the 1-minute load average is at most this', field: 'loadAverage', scale: 1, status: 'loadAverage' } },
  { key: 3, name: 'load-recheck-timeout', unit: 'seconds', writable: true, nullable: false, min: 0.001, max: MAX_TIMEOUT_SECONDS, integer: false, description: 'how often load and memory are rechecked while clients wait',
    daemon: { short: '-r', arg: 'seconds', help: 'how often load and memory are rechecked while clients wait (at most 86400)', field: 'loadRecheckMs', scale: 1000, status: 'loadRecheckSeconds' } },
  { key: 4, name: 'min-memory-avail', unit: 'MiB', writable: true, nullable: true, min: 0, max: Number.MAX_VALUE, integer: false, description: 'grant only while MemAvailable is at least this',
    daemon: { short: '-a', arg: 'MiB', help: 'hand out tokens only while MemAvailable is at least this', field: 'minMemoryAvailMiB', scale: 1, status: 'minMemoryAvailMiB' } },
  { key: 5, name: 'per-process-limit', unit: 'count', writable: true, nullable: true, min: 1, max: MAX_TOKENS, integer: true, description: 'at most this many tokens per process',
    daemon: { short: '-p', arg: 'n', field: 'perProcessLimit', scale: 1, status: 'perProcessLimit' } },
  { key: 6, name: 'reservation-expiry', unit: 'seconds', writable: true, nullable: false, min: 0.001, max: MAX_TIMEOUT_SECONDS, integer: false, description: 'how long a token stays reserved for a poller',
    daemon: { arg: 'seconds', help: 'how long a token stays reserved for a poller that was told it may read (at most 86400)', field: 'reservationExpiryMs', scale: 1000, status: 'reservationExpirySeconds' } },
  // Pressure stall information: the share of the last 10 s in which some task stalled on the
  // resource (`some avg10`), read from /proc/pressure or steved's --pressure-cgroup.
  { key: 7, name: 'max-cpu-pressure', unit: 'percent', writable: true, nullable: true, min: 0, max: 100, integer: false, description: 'grant only while CPU pressure (some avg10, %) is at most this; 0: no limit',
    daemon: { arg: 'percent', help: 'hand out tokens only while CPU pressure (PSI some avg10, in %) is at most this; 0: no limit', field: 'maxCpuPressure', scale: 1, status: 'maxCpuPressure' } },
  { key: 8, name: 'max-memory-pressure', unit: 'percent', writable: true, nullable: true, min: 0, max: 100, integer: false, description: 'grant only while memory pressure (some avg10, %) is at most this; 0: no limit',
    daemon: { arg: 'percent', help: 'hand out tokens only while memory pressure (PSI some avg10, in %) is at most this; 0: no limit', field: 'maxMemoryPressure', scale: 1, status: 'maxMemoryPressure' } },
  { key: 9, name: 'max-io-pressure', unit: 'percent', writable: true, nullable: true, min: 0, max: 100, integer: false, description: 'grant only while IO pressure (some avg10, %) is at most this; 0: no limit',
    daemon: { arg: 'percent', help: 'hand out tokens only while IO pressure (PSI some avg10, in %) is at most this; 0: no limit', field: 'maxIoPressure', scale: 1, status: 'maxIoPressure' } },
  { key: 100, name: 'tokens', unit: 'count', writable: false, nullable: false, min: 0, max: Number.MAX_VALUE, integer: true, description: 'tokens free now (negative while a lowered pool drains)' },
  { key: 101, name: 'held', unit: 'count', writable: false, nullable: false, min: 0, max: Number.MAX_VALUE, integer: true, description: 'tokens held now' },
  { key: 102, name: 'reserved', unit: 'count', writable: false, nullable: false, min: 0, max: Number.MAX_VALUE, integer: true, description: 'tokens reserved for pollers now' },
  { key: 103, name: 'waiters', unit: 'count', writable: false, nullable: false, min: 0, max: Number.MAX_VALUE, integer: true, description: 'parked readers and pollers now' },
  { key: 104, name: 'admin-group', unit: 'count', writable: false, nullable: true, min: 0, max: Number.MAX_VALUE, integer: true, description: 'gid allowed to change settings besides root' },
] as const satisfies readonly SettingDef[]

/** The writable settings, each with its daemon side. */
export const POOL_SETTINGS: ReadonlyArray<SettingDef & { daemon: DaemonSetting }> = SETTINGS.filter((s): s is Extract<(typeof SETTINGS)[number], { daemon: DaemonSetting }> => 'daemon' in s)

export function settingByName(name: string): SettingDef | undefined {
  return (SETTINGS as readonly SettingDef[]).find((s) => s.name === name)
}

export function settingByKey(key: number): SettingDef | undefined {
  return (SETTINGS as readonly SettingDef[]).find((s) => s.key === key)
}

/** Why `value` is not acceptable for `def`, or null when it is. */
export function validateSetting(def: SettingDef, value: number | null): string | null {
  if (!def.writable) return `${def.name} is read-only`
  if (value === null) return def.nullable ? null : `${def.name} cannot be unset`
  if (!Number.isFinite(value)) return `${def.name} must be a number`
  if (def.integer && !Number.isInteger(value)) return `${def.name} must be a whole number`
  if (value < def.min) return `${def.name} must be ${def.min === Number.MIN_VALUE ? '> 0' : `>= ${def.min}`}`
  if (value > def.max) return `${def.name} must be <= ${def.max}`
  return null
}

export function encodeSetting(key: number, value: number | null): Buffer {
  const b = Buffer.alloc(SETTING_SIZE)
  b.writeUInt32LE(key, 0)
  b.writeUInt32LE(value === null ? FLAG_UNSET : 0, 4)
  b.writeDoubleLE(value ?? 0, 8)
  return b
}

export function decodeSetting(b: Buffer): { key: number; value: number | null } {
  const key = b.readUInt32LE(0)
  const flags = b.readUInt32LE(4)
  return { key, value: flags & FLAG_UNSET ? null : b.readDoubleLE(8) }
}

/** The root of a join: a pid as steved sees it, or the calling process, or its parent. */
export type GroupRoot = number | 'caller' | 'parent'

export interface GroupRequest {
  op: number
  name: string
  pid: GroupRoot
  limit: number | null
}

export function encodeGroup(r: GroupRequest): Buffer {
  const name = Buffer.from(r.name, 'utf8')
  if (name.length === 0 || name.length > GROUP_NAME_MAX) throw new RangeError(`group names are 1 to ${GROUP_NAME_MAX} bytes`)
  const b = Buffer.alloc(GROUP_SIZE)
  b.writeUInt32LE(r.op, 0)
  const who = r.pid === 'caller' ? GROUP_FLAG_CALLER : r.pid === 'parent' ? GROUP_FLAG_PARENT : 0
  b.writeUInt32LE((r.limit === null ? FLAG_UNSET : 0) | who, 4)
  b.writeUInt32LE(typeof r.pid === 'number' ? r.pid : 0, 8)
  b.writeDoubleLE(r.limit ?? 0, 16)
  name.copy(b, 24)
  return b
}

export function decodeGroup(b: Buffer): GroupRequest {
  const end = b.indexOf(0, 24)
  const flags = b.readUInt32LE(4)
  return {
    op: b.readUInt32LE(0),
    limit: flags & FLAG_UNSET ? null : b.readDoubleLE(16),
    pid: flags & GROUP_FLAG_CALLER ? 'caller' : flags & GROUP_FLAG_PARENT ? 'parent' : b.readUInt32LE(8),
    name: b.subarray(24, end < 0 ? b.length : end).toString('utf8'),
  }
}

/** Which control request failed: the meaning of an errno depends on it. */
export type ControlRequest = 'get' | 'set' | 'status' | 'group'

/** A failed control request: Node's system error shape (`code` 'ENOTTY', ...) plus the request. */
export interface ControlError extends SystemError {
  request: ControlRequest
}

const E = os.constants.errno

/**
 * True when the path answered as something other than steved: a FIFO, steve or guildmaster
 * answer ENOTTY; a FUSE file of another server EINVAL to requests it does not know.
 */
export function isNotSteved(e: unknown): boolean {
  const c = e as Partial<ControlError>
  return c.errno === -E.ENOTTY || (c.errno === -E.EINVAL && (c.request === 'get' || c.request === 'status'))
}

/**
 * Control requests on one open jobserver path. Every failure is a ControlError (Node's `code`
 * and negative `errno`, `syscall` 'ioctl', `path`, `request`); the open throws Node's own fs
 * error. close() is idempotent.
 */
export class ControlClient {
  readonly #native: Native
  #fd: number | null

  /** Opens `path` read-only and non-blocking: reading the status must never take a token. */
  constructor(readonly path: string, native: Native = loadNative()) {
    this.#native = native
    this.#fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  }

  #ioctl(request: ControlRequest, code: number, buf: Buffer): void {
    if (this.#fd === null) throw new Error('ControlClient is closed')
    const r = this.#native.ioctl(this.#fd, code, buf)
    if (r < 0) throw Object.assign(systemError(r, 'ioctl', this.path), { request })
  }

  /** A setting or pool figure by the table's key. */
  get(def: SettingDef): number | null {
    const buf = encodeSetting(def.key, 0)
    this.#ioctl('get', STEVED_IOC_GET, buf)
    return decodeSetting(buf).value
  }

  /** Change a setting (validate it first with validateSetting: steved answers EINVAL). */
  set(def: SettingDef, value: number | null): void {
    this.#ioctl('set', STEVED_IOC_SET, encodeSetting(def.key, value))
  }

  /**
   * Put the process tree under `pid` into group `name`, capped at `limit` tokens together.
   * 'caller' and 'parent' name this process or its parent as steved sees them, also from
   * inside another pid namespace.
   */
  groupJoin(name: string, pid: GroupRoot, limit: number | null): void {
    this.#ioctl('group', STEVED_IOC_GROUP, encodeGroup({ op: GROUP_OP_JOIN, name, pid, limit }))
  }

  groupRemove(name: string): void {
    this.#ioctl('group', STEVED_IOC_GROUP, encodeGroup({ op: GROUP_OP_REMOVE, name, pid: 0, limit: null }))
  }

  /** The status document. ESTALE (steved dropped this reader's snapshot mid-read) starts over. */
  status(): Status {
    for (let attempt = 1; ; attempt++) {
      try {
        return this.#statusOnce()
      } catch (e) {
        if ((e as SystemError).errno !== -E.ESTALE || attempt >= 5) throw e
      }
    }
  }

  #statusOnce(): Status {
    let offset = 0
    let total = -1
    const parts: Buffer[] = []
    do {
      const buf = Buffer.alloc(STATUS_CHUNK_SIZE)
      buf.writeUInt32LE(offset, 0)
      this.#ioctl('status', STEVED_IOC_STATUS, buf)
      total = buf.readUInt32LE(0)
      const n = buf.readUInt32LE(4)
      parts.push(Buffer.from(buf.subarray(STATUS_HEADER, STATUS_HEADER + n)))
      offset += n
      if (n === 0) break
    } while (offset < total)
    return JSON.parse(Buffer.concat(parts).toString('utf8')) as Status
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
