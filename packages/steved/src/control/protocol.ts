// The control protocol: ioctls on the jobserver file or device itself, so it works wherever
// the device is visible (containers, chroots, Portage's sandbox). Shared by steved (server
// side) and stevectl (client side). Documented in docs/control.md.
//
// Every request uses the restricted ioctl encoding (_IOC direction and size), which both FUSE
// regular files and CUSE devices support without a retry protocol.

import type { PoolConfig } from '../core'

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

type Unit = 'count' | 'load' | 'seconds' | 'MiB'

/**
 * Bounds shared by the command line, the TOML file, SIGHUP and STEVED_IOC_SET. Token counts
 * stay far below where a double stops counting exactly; timeouts stay below Node's timer
 * limit (2^31 - 1 ms, about 24.8 days), past which a timer would fire every millisecond.
 */
export const MAX_TOKENS = 1_000_000
export const MAX_TIMEOUT_SECONDS = 86_400

export interface SettingDef {
  key: number
  /** The name used by steved's options, stevectl's --get-X/--set-X and the TOML file. */
  name: string
  unit: Unit
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
}

export const SETTINGS: readonly SettingDef[] = [
  { key: 0, name: 'jobs', unit: 'count', writable: true, nullable: false, min: 1, max: MAX_TOKENS, integer: true, description: 'tokens in the pool' },
  { key: 1, name: 'min-jobs', unit: 'count', writable: true, nullable: false, min: 0, max: MAX_TOKENS, integer: true, description: 'tokens that may be out whatever the load' },
  { key: 2, name: 'load-average', unit: 'load', writable: true, nullable: true, min: Number.MIN_VALUE, max: Number.MAX_VALUE, integer: false, description: 'grant only while the 1-minute load average is at most this' },
  { key: 3, name: 'load-recheck-timeout', unit: 'seconds', writable: true, nullable: false, min: 0.001, max: MAX_TIMEOUT_SECONDS, integer: false, description: 'how often load and memory are rechecked while clients wait' },
  { key: 4, name: 'min-memory-avail', unit: 'MiB', writable: true, nullable: true, min: 0, max: Number.MAX_VALUE, integer: false, description: 'grant only while MemAvailable is at least this' },
  { key: 5, name: 'per-process-limit', unit: 'count', writable: true, nullable: true, min: 1, max: MAX_TOKENS, integer: true, description: 'at most this many tokens per process' },
  { key: 6, name: 'reservation-expiry', unit: 'seconds', writable: true, nullable: false, min: 0.001, max: MAX_TIMEOUT_SECONDS, integer: false, description: 'how long a token stays reserved for a poller' },
  { key: 100, name: 'tokens', unit: 'count', writable: false, nullable: false, min: 0, max: Number.MAX_VALUE, integer: true, description: 'tokens free now (negative while a lowered pool drains)' },
  { key: 101, name: 'held', unit: 'count', writable: false, nullable: false, min: 0, max: Number.MAX_VALUE, integer: true, description: 'tokens held now' },
  { key: 102, name: 'reserved', unit: 'count', writable: false, nullable: false, min: 0, max: Number.MAX_VALUE, integer: true, description: 'tokens reserved for pollers now' },
  { key: 103, name: 'waiters', unit: 'count', writable: false, nullable: false, min: 0, max: Number.MAX_VALUE, integer: true, description: 'parked readers and pollers now' },
  { key: 104, name: 'admin-group', unit: 'count', writable: false, nullable: true, min: 0, max: Number.MAX_VALUE, integer: true, description: 'gid allowed to change settings besides root' },
]

export function settingByName(name: string): SettingDef | undefined {
  return SETTINGS.find((s) => s.name === name)
}

export function settingByKey(key: number): SettingDef | undefined {
  return SETTINGS.find((s) => s.key === key)
}

/** The pool-config value behind a writable setting, in the setting's unit (null = none). */
export function settingFromConfig(def: SettingDef, c: PoolConfig): number | null {
  switch (def.name) {
    case 'jobs':
      return c.jobs
    case 'min-jobs':
      return c.minJobs
    case 'load-average':
      return c.loadAverage
    case 'load-recheck-timeout':
      return c.loadRecheckMs / 1000
    case 'min-memory-avail':
      return c.minMemoryAvailMiB
    case 'per-process-limit':
      return c.perProcessLimit
    case 'reservation-expiry':
      return c.reservationExpiryMs / 1000
  }
  throw new Error(`${def.name} is not a pool setting`)
}

/** The pool-config patch that sets `def` to `value`. */
export function configPatch(def: SettingDef, value: number | null): Partial<PoolConfig> {
  switch (def.name) {
    case 'jobs':
      return { jobs: value! }
    case 'min-jobs':
      return { minJobs: value! }
    case 'load-average':
      return { loadAverage: value }
    case 'load-recheck-timeout':
      return { loadRecheckMs: value! * 1000 }
    case 'min-memory-avail':
      return { minMemoryAvailMiB: value }
    case 'per-process-limit':
      return { perProcessLimit: value }
    case 'reservation-expiry':
      return { reservationExpiryMs: value! * 1000 }
  }
  throw new Error(`${def.name} is not settable`)
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

export interface GroupRequest {
  op: number
  name: string
  pid: number
  limit: number | null
}

export function encodeGroup(r: GroupRequest): Buffer {
  const name = Buffer.from(r.name, 'utf8')
  if (name.length === 0 || name.length > GROUP_NAME_MAX) throw new RangeError(`group names are 1 to ${GROUP_NAME_MAX} bytes`)
  const b = Buffer.alloc(GROUP_SIZE)
  b.writeUInt32LE(r.op, 0)
  b.writeUInt32LE(r.limit === null ? FLAG_UNSET : 0, 4)
  b.writeUInt32LE(r.pid, 8)
  b.writeDoubleLE(r.limit ?? 0, 16)
  name.copy(b, 24)
  return b
}

export function decodeGroup(b: Buffer): GroupRequest {
  const end = b.indexOf(0, 24)
  return {
    op: b.readUInt32LE(0),
    limit: b.readUInt32LE(4) & FLAG_UNSET ? null : b.readDoubleLE(16),
    pid: b.readUInt32LE(8),
    name: b.subarray(24, end < 0 ? b.length : end).toString('utf8'),
  }
}
