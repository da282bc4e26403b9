// createDaemon(): set up the transport (FUSE file or CUSE device), serve the pool, and tear
// everything down once. No side effects at import time; bin/steved.js owns the process.

import { execFileSync, spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import type { PoolConfig } from './core'
import { StevedError } from './errors'
import { DEFAULT_PRESSURE_DIR, PressureReader, pressureDirProblem } from './io/pressure'
import { cmdlineOf } from './io/procfs'
import { TokenServer } from './io/server'
import { MNT_DETACH, loadAddon, type Addon } from './native'
import { settingFromConfig, settingOfField } from './control/protocol'
import { StatusSnapshots, controlHandler } from './control/server'
import { formatReport } from './report'
import { buildStatus, type ServerInfo, type Status } from './status'
import { VERSION } from './version'

export type Transport = 'auto' | 'fuse' | 'cuse'

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

export interface DaemonDeps {
  addon?: Addon
  log?: (level: 'info' | 'debug' | 'warn', msg: string) => void
  /** Where /dev lives (tests of the CUSE adapter point it elsewhere). */
  devDir?: string
  mountinfo?: string
  readyTimeoutMs?: number
}

export interface StartInfo {
  transport: 'fuse' | 'cuse'
  /** The path clients open. */
  path: string
  makeflags: string
}

export { DEFAULT_FUSE_PATH } from 'jobclient'
/** open(2)'s O_PATH on Linux (x86-64 and arm64); Node's fs.constants lacks it. */
const O_PATH = 0o10000000
export const DEFAULT_DEV_NAME = 'steve'

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

/** Decide the transport for `auto`: CUSE where the kernel offers it, else a FUSE file. */
export function pickTransport(t: Transport, devDir = '/dev'): 'fuse' | 'cuse' {
  if (t !== 'auto') return t
  return fs.existsSync(path.join(devDir, 'cuse')) ? 'cuse' : 'fuse'
}

/** Mount points listed in a mountinfo file (field 5, with octal escapes undone). */
export function mountPoints(mountinfo: string): Set<string> {
  const out = new Set<string>()
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ')
    if (f.length > 4) out.add(f[4].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
  }
  return out
}

function resolveId(flag: '-u' | '-g', name: string, what: string): number {
  if (/^\d+$/.test(name)) return Number(name)
  try {
    return Number(execFileSync('id', [flag, name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim())
  } catch {
    throw new StevedError('ERR_STEVED_USAGE', `unknown ${what} '${name}'`, `create it, or pass an existing ${what}`)
  }
}

function groupId(name: string): number {
  if (/^\d+$/.test(name)) return Number(name)
  for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
    const f = line.split(':')
    if (f[0] === name) return Number(f[2])
  }
  try {
    return Number(execFileSync('getent', ['group', name], { encoding: 'utf8' }).split(':')[2])
  } catch {
    throw new StevedError('ERR_STEVED_USAGE', `unknown group '${name}'`, 'create it (groupadd), or pass an existing group')
  }
}

export function createDaemon(opts: DaemonOptions, deps: DaemonDeps = {}): Daemon {
  const addon = deps.addon ?? loadAddon()
  const log = deps.log ?? (() => {})
  const devDir = deps.devDir ?? '/dev'
  const gid = opts.group !== null ? groupId(opts.group) : 0
  const userIds = opts.user !== null ? { uid: resolveId('-u', opts.user, 'user'), gid: resolveId('-g', opts.user, 'user') } : null
  const transport = pickTransport(opts.transport, devDir)
  if (opts.pressureDir !== undefined) {
    // A mistyped cgroup would silently lift every pressure limit: refuse it at start.
    const why = pressureDirProblem(opts.pressureDir, ['cpu', 'memory', 'io'])
    if (why) throw new StevedError('ERR_STEVED_USAGE', `--pressure-cgroup: ${why}`, 'pass a cgroup v2 directory (where cgroup2 is mounted, with PSI enabled), or leave it out to read /proc/pressure')
  }
  const pressure = new PressureReader(opts.pressureDir ?? DEFAULT_PRESSURE_DIR, (m) => log('warn', m))
  const server = new TokenServer(opts.pool, { addon, log: (l, m) => log(l, m), pressure: (r) => pressure.read(r) })
  let where = ''
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
  server.ioctlHandler = controlHandler(server, {
    adminGid: () => adminGid,
    snapshots,
    statusJson: () => JSON.stringify(status()),
    log: (m) => log('info', m),
  })
  /** An O_PATH descriptor of the mounted file (FUSE transport), for the unmount. */
  let mountFd: number | null = null
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

  const prepareFile = (file: string): void => {
    makeParents(path.dirname(file))
    let st: fs.Stats | null = null
    try {
      st = fs.statSync(file)
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      if (code === 'ENOTCONN') {
        // A FUSE mount whose server died (a crash, kill -9): detach it and carry on.
        const r = addon.umount(file, MNT_DETACH)
        if (r < 0) throw new StevedError('ERR_STEVED_BUSY', `${file} is a dead FUSE mount and unmounting it failed (errno ${-r})`, `run: umount -l ${file}`)
        log('info', `cleaned up a stale mount at ${file} left by an earlier steved`)
        st = fs.statSync(file, { throwIfNoEntry: false }) ?? null
      } else if (code !== 'ENOENT') {
        throw e
      }
    }
    const real = fs.existsSync(file) ? fs.realpathSync(file) : file
    const mounts = mountPoints(fs.readFileSync(deps.mountinfo ?? '/proc/self/mountinfo', 'utf8'))
    if (mounts.has(real)) {
      throw new StevedError('ERR_STEVED_BUSY', `${file} is already a mount point (another steved serving it?)`, `stop that server first, or choose another --path`)
    }
    if (st === null) fs.writeFileSync(file, '', { mode: 0o644 })
    else if (!st.isFile()) {
      throw new StevedError('ERR_STEVED_USAGE', `--path ${file} is not a regular file`, 'steved mounts its jobserver on a regular file; pick a file path')
    }
  }

  const startFuse = (): StartInfo => {
    const file = path.resolve(opts.path)
    where = `FUSE file ${file}`
    if (!fs.existsSync(path.join(devDir, 'fuse'))) {
      throw new StevedError('ERR_STEVED_NO_DEVICE', `${devDir}/fuse does not exist`, 'load the fuse module (modprobe fuse) or give the container /dev/fuse')
    }
    if (process.getuid?.() !== 0 && !/^\s*user_allow_other\s*$/m.test(safeRead('/etc/fuse.conf'))) {
      throw new StevedError('ERR_STEVED_PERMISSION', 'serving the FUSE file to all users needs root', "run steved as root (it can drop privileges with --user), or add 'user_allow_other' to /etc/fuse.conf")
    }
    prepareFile(file)
    const options = ['allow_other', 'default_permissions', 'fsname=steved', 'subtype=steved'].join(',')
    const r = server.nativeSession.mountFile(file, options, opts.mode, 0, gid)
    if (r !== 0) {
      throw new StevedError('ERR_STEVED_MOUNT', `mounting ${where} failed (${r})`, 'see the libfuse message above; is /dev/fuse accessible and are you root?')
    }
    // A handle on the mount itself: if someone renames a directory above it, the path we were
    // given names nothing, but /proc/self/fd/N still leads to the mount. O_PATH opens without
    // sending FUSE a request (none could be answered: this thread serves them).
    try {
      mountFd = fs.openSync(file, O_PATH)
    } catch (e) {
      log('warn', `cannot keep a handle on the mount (${(e as NodeJS.ErrnoException).code}); a rename of its directory would keep it from being unmounted`)
    }
    return { transport: 'fuse', path: file, makeflags: `--jobserver-auth=fifo:${file}` }
  }

  const startCuse = (): StartInfo => {
    const dev = path.join(devDir, opts.devName)
    where = `CUSE device ${dev}`
    const cuse = path.join(devDir, 'cuse')
    if (!fs.existsSync(cuse)) {
      throw new StevedError('ERR_STEVED_NO_DEVICE', `${cuse} does not exist: this kernel has no CUSE (or the module is not loaded)`, 'run: modprobe cuse, or use --transport fuse')
    }
    if (fs.existsSync(dev)) {
      throw new StevedError('ERR_STEVED_BUSY', `${dev} already exists (another steved serving it?)`, 'stop that server first, or choose another --dev-name')
    }
    const r = server.nativeSession.registerDevice(opts.devName, cuse)
    if (r === -13 || r === -1) {
      throw new StevedError('ERR_STEVED_PERMISSION', `opening ${cuse} was refused`, 'run steved as root, or give its user access to /dev/cuse')
    }
    if (r !== 0) throw new StevedError('ERR_STEVED_MOUNT', `registering ${where} failed (errno ${-r})`)
    return { transport: 'cuse', path: dev, makeflags: `--jobserver-auth=fifo:${dev}` }
  }

  const fixDevicePermissions = async (dev: string): Promise<void> => {
    // devtmpfs creates the node as root:root 0600; a udev rule may already have fixed it.
    for (let i = 0; i < 100 && !fs.existsSync(dev); i++) await new Promise((r) => setTimeout(r, 20))
    const st = fs.statSync(dev)
    if ((st.mode & 0o7777) === opts.mode && (opts.group === null || st.gid === gid)) return
    try {
      fs.chmodSync(dev, opts.mode)
      if (opts.group !== null) fs.chownSync(dev, st.uid, gid)
    } catch (e) {
      // Without root (or CAP_CHOWN/CAP_FOWNER) the node keeps what devtmpfs or udev gave it.
      log('warn', `cannot set the mode/group of ${dev} (${(e as NodeJS.ErrnoException).code}); install the udev rule or run steved as root`)
    }
  }

  /**
   * Once we are not root we cannot unmount our own FUSE file. A root shell waits on a pipe
   * only we hold; when steved exits, however it exits, the pipe closes and the shell detaches
   * the mount, so no stale mount outlives us.
   */
  const armUnmounter = (file: string): void => {
    // fd 3 is the handle on the mount: it still finds it after a rename of a directory above.
    const child = spawn('sh', ['-c', 'cat >/dev/null; umount -l /proc/self/fd/3 2>/dev/null || exec umount -l "$1"', 'steved-unmount', file], {
      stdio: ['pipe', 'ignore', 'ignore', mountFd ?? 'ignore'],
      detached: true,
    })
    child.on('error', (e) => log('warn', `cannot start the unmount helper: ${e.message}`))
    child.unref()
    ;(child.stdin as unknown as { unref?: () => void } | null)?.unref?.()
  }

  const dropPrivileges = (): void => {
    if (!userIds || !opts.user) return
    try {
      ;(process as { initgroups?: (user: string, extraGroup: number) => void }).initgroups?.(opts.user, userIds.gid)
      process.setgid?.(userIds.gid)
      process.setuid?.(userIds.uid)
    } catch (e) {
      throw new StevedError('ERR_STEVED_PERMISSION', `cannot switch to user ${opts.user}: ${(e as Error).message}`, 'start steved as root to use --user')
    }
    log('info', `now running as ${opts.user} (uid ${userIds.uid}, gid ${userIds.gid})`)
  }

  return {
    server,
    stopped,
    async start(): Promise<StartInfo> {
      try {
        const started = transport === 'fuse' ? startFuse() : startCuse()
        info.path = started.path
        await waitReady()
        if (transport === 'cuse') await fixDevicePermissions(started.path)
        if (transport === 'fuse' && userIds) armUnmounter(started.path)
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
      // Unmount through the handle, so a renamed directory above the mount does not leave it
      // behind. Without root (--user) that fails and the unmount helper does it when we exit.
      server.close(mountFd !== null ? `/proc/self/fd/${mountFd}` : undefined)
      if (mountFd !== null) fs.closeSync(mountFd)
      mountFd = null
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

/**
 * Create a directory and its missing parents, each with one mkdir. Node's recursive mkdir
 * retries forever where mkdir says ENOENT for a parent that exists (/proc, /sys): a daemon
 * spinning at start-up, deaf to SIGTERM. Here every step is tried once and fails with a line.
 */
export function makeParents(dir: string): void {
  const missing: string[] = []
  let cur = path.resolve(dir)
  for (;;) {
    let st: fs.Stats | undefined
    try {
      st = fs.statSync(cur, { throwIfNoEntry: false })
    } catch (e) {
      throw new StevedError('ERR_STEVED_USAGE', `cannot use ${cur} for --path (${(e as NodeJS.ErrnoException).code})`, 'pick a --path inside a directory')
    }
    if (st) {
      if (!st.isDirectory()) throw new StevedError('ERR_STEVED_USAGE', `${cur} is not a directory`, 'pick a --path inside a directory')
      break
    }
    missing.unshift(cur)
    const up = path.dirname(cur)
    if (up === cur) break
    cur = up
  }
  for (const d of missing) {
    try {
      fs.mkdirSync(d, { mode: 0o755 })
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      if (code === 'EEXIST' && fs.statSync(d, { throwIfNoEntry: false })?.isDirectory()) continue
      throw new StevedError('ERR_STEVED_USAGE', `cannot create the directory ${d} for --path (${code})`, 'pick a --path in a writable file system, or create the directory first')
    }
  }
}

function safeRead(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch {
    return ''
  }
}
