// createDaemon(): wire the pieces (the transport from io/transport.ts, the TokenServer that
// starts it, the control plane, the status) and tear everything down once. It mounts nothing
// itself. No side effects at import time; bin/steved.js owns the process.

import type { PoolConfig } from './core'
import { StevedError } from './errors'
import { groupId, userIds } from './io/accounts'
import { DEFAULT_PRESSURE_DIR, PressureReader, pressureDirProblem } from './io/pressure'
import { cmdlineOf, parentOf } from './io/procfs'
import { TokenServer } from './io/server'
import { cuseDevice, fuseFile, pickTransport, type Endpoint, type StartInfo } from './io/transport'
import { loadAddon, type Addon } from './native'
import { settingFromConfig, settingOfField } from './control/protocol'
import { StatusSnapshots, controlPlane } from './control/server'
import { formatReport } from './report'
import { buildStatus, type ServerInfo, type Status } from './status'
import { VERSION } from './version'

import type { DaemonOptions } from './options'
import { minJobsProblem } from './core'

export { DEFAULT_DEV_NAME, DEFAULT_FUSE_PATH, type DaemonOptions, type Transport } from './options'
export { makeParents, mountPoints, pickTransport, type StartInfo } from './io/transport'

export interface DaemonDeps {
  addon?: Addon
  log?: (level: 'info' | 'debug' | 'warn', msg: string) => void
  /** Where /dev lives (tests of the CUSE adapter point it elsewhere). */
  devDir?: string
  mountinfo?: string
  readyTimeoutMs?: number
}

export interface Daemon {
  start(): Promise<StartInfo>
  /** Unmount or unregister and stop serving. Idempotent. */
  shutdown(): void
  report(): string
  readonly server: TokenServer
  /** The status document (`stevectl status --json`). */
  status(): Status
  /**
   * Apply changed options (SIGHUP), all or nothing: live settings at once. A setting changed at
   * runtime (stevectl --set-X) keeps its runtime value while the file's value for it is the one
   * last applied; `kept` lists those. `restart` lists options that need a restart.
   */
  reconfigure(next: DaemonOptions): { restart: string[]; kept: Array<{ name: string; value: number | null; file: number | null }> }
  /** Resolves with a reason when serving stopped on its own (the mount went away). */
  readonly stopped: Promise<string>
}

export function createDaemon(opts: DaemonOptions, deps: DaemonDeps = {}): Daemon {
  const addon = deps.addon ?? loadAddon()
  const log = deps.log ?? (() => {})
  const devDir = deps.devDir ?? '/dev'
  const gid = opts.group !== null ? groupId(opts.group) : 0
  const ids = opts.user !== null ? userIds(opts.user) : null
  const transport = pickTransport(opts.transport, devDir)
  if (opts.pressureDir !== undefined) {
    // A mistyped cgroup would silently lift every pressure limit: refuse it at start.
    const why = pressureDirProblem(opts.pressureDir, ['cpu', 'memory', 'io'])
    if (why) throw new StevedError('ERR_STEVED_USAGE', `--pressure-cgroup: ${why}`, 'pass a cgroup v2 directory (where cgroup2 is mounted, with PSI enabled), or leave it out to read /proc/pressure')
  }
  const pressure = new PressureReader(opts.pressureDir ?? DEFAULT_PRESSURE_DIR, (m) => log('warn', m))
  let adminGid = opts.adminGroup !== null ? groupId(opts.adminGroup) : null
  /** The pool settings the configuration (file and flags) asked for when last applied. */
  let fromFile: PoolConfig = { ...opts.pool }
  const info: ServerInfo = {
    pid: process.pid,
    version: VERSION,
    transport,
    path: '',
    startedAt: new Date().toISOString(),
    adminGroup: adminGid,
    statusSnapshots: { count: 0, bytes: 0 },
  }
  const snapshots = new StatusSnapshots()
  const status = (): Status =>
    buildStatus(server.snapshot(), { ...info, adminGroup: adminGid, statusSnapshots: { count: snapshots.count, bytes: snapshots.bytes } }, (pid) => cmdlineOf(pid))
  const control = controlPlane({ adminGid: () => adminGid, snapshots, statusJson: () => JSON.stringify(status()), parentOf: (pid) => parentOf(pid) })
  const server = new TokenServer(opts.pool, { addon, log: (l, m) => log(l, m), pressure: (r) => pressure.read(r), control })
  const access = { mode: opts.mode, gid, groupSet: opts.group !== null }
  const env = { addon, log, devDir, mountinfo: deps.mountinfo }
  const endpoint: Endpoint = transport === 'fuse' ? fuseFile(opts.path, access, env) : cuseDevice(opts.devName, access, env)
  const where = endpoint.where
  let stoppedResolve!: (why: string) => void
  const stopped = new Promise<string>((r) => (stoppedResolve = r))
  let down = false

  server.onGone((r) => {
    log('warn', `the kernel closed our ${transport === 'fuse' ? 'mount' : 'device'} (${r}); stopping`)
    stoppedResolve(`${where} went away`)
  })

  const waitReady = async (): Promise<void> => {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new StevedError('ERR_STEVED_MOUNT', `the kernel did not start talking to ${where} within ${deps.readyTimeoutMs ?? 10000} ms`)),
        deps.readyTimeoutMs ?? 10000,
      )
    })
    try {
      await Promise.race([server.ready, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  const dropPrivileges = (): void => {
    if (!ids || !opts.user) return
    try {
      ;(process as { initgroups?: (user: string, extraGroup: number) => void }).initgroups?.(opts.user, ids.gid)
      process.setgid?.(ids.gid)
      process.setuid?.(ids.uid)
    } catch (e) {
      throw new StevedError('ERR_STEVED_PERMISSION', `cannot switch to user ${opts.user}: ${(e as Error).message}`, 'start steved as root to use --user')
    }
    log('info', `now running as ${opts.user} (uid ${ids.uid}, gid ${ids.gid})`)
  }

  return {
    server,
    stopped,
    async start(): Promise<StartInfo> {
      try {
        const started = server.start(endpoint)
        info.path = started.path
        await waitReady()
        await endpoint.ready(ids !== null)
        dropPrivileges()
        return started
      } catch (e) {
        this.shutdown()
        throw e
      }
    },
    shutdown(): void {
      if (down) return
      down = true
      // The server unmounts through the endpoint's handle, so a renamed directory above the
      // mount does not leave it behind. Without root (--user) that fails and the unmount helper
      // does it when we exit.
      server.close()
      stoppedResolve('shut down')
    },
    report(): string {
      return formatReport(status(), where)
    },
    status,
    reconfigure(next: DaemonOptions) {
      // Everything that can fail comes first, so a rejected file changes nothing.
      const nextAdminGid = next.adminGroup !== null ? groupId(next.adminGroup) : null
      const cur = server.pool.config
      const patch: Partial<PoolConfig> = {}
      const kept: Array<{ name: string; value: number | null; file: number | null }> = []
      for (const k of Object.keys(next.pool) as Array<keyof PoolConfig>) {
        if (next.pool[k] === cur[k]) continue
        if (next.pool[k] === fromFile[k]) {
          const d = settingOfField(k)
          kept.push({ name: d.name, value: settingFromConfig(d, cur), file: settingFromConfig(d, next.pool) })
          continue
        }
        ;(patch as Record<string, unknown>)[k] = next.pool[k]
      }
      // A value set at runtime and kept can meet a new one from the file (rules.ts).
      const after = { ...cur, ...patch }
      const clash = minJobsProblem(after.minJobs, after.jobs)
      if (clash) throw new StevedError('ERR_STEVED_USAGE', `${clash}, with the values set at runtime kept`, 'lower min-jobs or raise jobs')
      if (Object.keys(patch).length) {
        server.configure(patch)
        log('info', `configuration applied: ${JSON.stringify(patch)}`)
      }
      fromFile = { ...next.pool }
      adminGid = nextAdminGid
      const restart: string[] = []
      for (const k of ['transport', 'path', 'devName', 'mode', 'group', 'user'] as const) {
        if (next[k] !== opts[k]) restart.push(k)
      }
      return { restart, kept }
    },
  }
}
