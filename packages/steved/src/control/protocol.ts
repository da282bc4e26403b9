// The control protocol: ioctls on the jobserver file or device itself. The codec and the
// settings table live in jobclient (one copy for steved, stevectl, the emerge shim and any other
// tool); this adds the server's side: a setting's place in the pool configuration.
// Documented in docs/control.md.

import { POOL_SETTINGS, type SettingDef } from 'jobclient'

import type { PoolConfig } from '../core'

export {
  SETTINGS,
  POOL_SETTINGS,
  MAX_TOKENS,
  MAX_TIMEOUT_SECONDS,
  SETTING_SIZE,
  STATUS_CHUNK_SIZE,
  STATUS_HEADER,
  STEVED_IOC_GET,
  STEVED_IOC_SET,
  STEVED_IOC_STATUS,
  STEVED_IOC_GROUP,
  GROUP_SIZE,
  GROUP_NAME_MAX,
  GROUP_OP_JOIN,
  GROUP_OP_REMOVE,
  FLAG_UNSET,
  settingByName,
  settingByKey,
  validateSetting,
  encodeSetting,
  decodeSetting,
  encodeGroup,
  decodeGroup,
  type SettingDef,
  type GroupRequest,
} from 'jobclient'

/** Where a writable setting lives in the pool configuration, and the factor from its unit to the field's. */
export function poolField(def: SettingDef) {
  const d = POOL_SETTINGS.find((p) => p.key === def.key)
  if (!d) throw new Error(`${def.name} is not a pool setting`)
  return d.daemon as typeof d.daemon & { field: keyof PoolConfig }
}

/** The pool-config value behind a writable setting, in the setting's unit (null = none). */
export function settingFromConfig(def: SettingDef, c: PoolConfig): number | null {
  const d = poolField(def)
  const v = c[d.field]
  return v === null ? null : v / d.scale
}

/** The pool-config patch that sets `def` to `value`. */
export function configPatch(def: SettingDef, value: number | null): Partial<PoolConfig> {
  const d = poolField(def)
  return { [d.field]: value === null ? null : value * d.scale }
}

/** The setting (as stevectl and the file name it) behind a pool-config field. */
export function settingOfField(field: keyof PoolConfig): SettingDef & { daemon: { scale: number } } {
  const d = POOL_SETTINGS.find((p) => p.daemon.field === field)
  if (!d) throw new Error(`${field} is not a pool setting`)
  return d
}
