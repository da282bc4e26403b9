// The daemon's options, as the command line and the configuration file give them to
// createDaemon (cli.ts builds them; daemon.ts wires them). Types and defaults only.

import type { PoolConfig } from './core'

export { DEFAULT_FUSE_PATH } from 'jobclient'

export type Transport = 'auto' | 'fuse' | 'cuse'

/** The CUSE device name: /dev/steve, as steve names it, so existing setups work unchanged. */
export const DEFAULT_DEV_NAME = 'steve'

export interface DaemonOptions {
  pool: PoolConfig
  transport: Transport
  /** The FUSE file (fuse transport). */
  path: string
  /** The CUSE device name, /dev/<devName> (cuse transport). */
  devName: string
  /** Permission bits of the file or device. */
  mode: number
  /** Group owning the file or device (name or number); null: root's. */
  group: string | null
  /** Drop to this user once the file or device is set up. */
  user: string | null
  /** Group whose members may change settings at runtime (besides root). */
  adminGroup: string | null
  /**
   * Where pressure (PSI) is read: /proc/pressure (the machine; the default) or a cgroup v2
   * directory, whose cpu.pressure, memory.pressure and io.pressure are read.
   */
  pressureDir?: string
}
