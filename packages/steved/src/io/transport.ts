// The transports: where the kernel meets steved. A FUSE-mounted regular file or a CUSE
// character device, both behind one Endpoint that TokenServer starts on its native session.
// Everything about mounting lives here: checking and preparing the file, stale mounts, the
// device node's access, the handle the unmount goes through and the unmounter that outlives a
// dropped root. daemon.ts only picks one and wires it.

import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { StevedError } from '../errors'
import { MNT_DETACH, type Addon, type NativeSession } from '../native'

export interface StartInfo {
  transport: 'fuse' | 'cuse'
  /** The path clients open. */
  path: string
  makeflags: string
}

/** Who may open the file or device. */
export interface Access {
  mode: number
  /** Owning group id (0: root's). */
  gid: number
  /** Whether a group was asked for (a CUSE node's group is left alone otherwise). */
  groupSet: boolean
}

export interface TransportEnv {
  addon: Addon
  log: (level: 'info' | 'debug' | 'warn', msg: string) => void
  /** Where /dev lives (tests of the CUSE adapter point it elsewhere). */
  devDir: string
  mountinfo?: string
}

export interface Endpoint {
  readonly kind: 'fuse' | 'cuse'
  /** "FUSE file /run/steved/jobserver" or "CUSE device /dev/steve", for messages. */
  readonly where: string
  /** Check and prepare, then mount or register through the session. Throws StevedError. */
  open(session: NativeSession): StartInfo
  /**
   * Once the kernel talks to us: give a device node its access, or, when root will be dropped,
   * arm the helper that unmounts the file when steved exits.
   */
  ready(dropsPrivileges: boolean): Promise<void>
  /** The name to unmount through (a kept handle survives a renamed directory), if any. */
  unmountPath(): string | undefined
  /** Release what open() kept. Idempotent. */
  close(): void
}

/** open(2)'s O_PATH on Linux (x86-64 and arm64); Node's fs.constants lacks it. */
const O_PATH = 0o10000000

/** Decide the transport for `auto`: CUSE where the kernel offers it, else a FUSE file. */
export function pickTransport(t: 'auto' | 'fuse' | 'cuse', devDir = '/dev'): 'fuse' | 'cuse' {
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

/** A FUSE mount over the regular file `file`. */
export function fuseFile(file: string, access: Access, env: TransportEnv): Endpoint {
  file = path.resolve(file)
  const where = `FUSE file ${file}`
  let mountFd: number | null = null

  const prepare = (): void => {
    makeParents(path.dirname(file))
    let st: fs.Stats | null = null
    try {
      st = fs.statSync(file)
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      if (code === 'ENOTCONN') {
        // A FUSE mount whose server died (a crash, kill -9): detach it and carry on.
        const r = env.addon.umount(file, MNT_DETACH)
        if (r < 0) throw new StevedError('ERR_STEVED_BUSY', `${file} is a dead FUSE mount and unmounting it failed (errno ${-r})`, `run: umount -l ${file}`)
        env.log('info', `cleaned up a stale mount at ${file} left by an earlier steved`)
        st = fs.statSync(file, { throwIfNoEntry: false }) ?? null
      } else if (code !== 'ENOENT') {
        throw e
      }
    }
    const real = fs.existsSync(file) ? fs.realpathSync(file) : file
    const mounts = mountPoints(fs.readFileSync(env.mountinfo ?? '/proc/self/mountinfo', 'utf8'))
    if (mounts.has(real)) {
      throw new StevedError('ERR_STEVED_BUSY', `${file} is already a mount point (another steved serving it?)`, `stop that server first, or choose another --path`)
    }
    if (st === null) fs.writeFileSync(file, '', { mode: 0o644 })
    else if (!st.isFile()) {
      throw new StevedError('ERR_STEVED_USAGE', `--path ${file} is not a regular file`, 'steved mounts its jobserver on a regular file; pick a file path')
    }
  }

  /**
   * Once we are not root we cannot unmount our own FUSE file. A root shell waits on a pipe
   * only we hold; when steved exits, however it exits, the pipe closes and the shell detaches
   * the mount, so no stale mount outlives us.
   */
  const armUnmounter = (): void => {
    // fd 3 is the handle on the mount: it still finds it after a rename of a directory above.
    const child = spawn('sh', ['-c', 'cat >/dev/null; umount -l /proc/self/fd/3 2>/dev/null || exec umount -l "$1"', 'steved-unmount', file], {
      stdio: ['pipe', 'ignore', 'ignore', mountFd ?? 'ignore'],
      detached: true,
    })
    child.on('error', (e) => env.log('warn', `cannot start the unmount helper: ${e.message}`))
    child.unref()
    ;(child.stdin as unknown as { unref?: () => void } | null)?.unref?.()
  }

  return {
    kind: 'fuse',
    where,
    open(session: NativeSession): StartInfo {
      if (!fs.existsSync(path.join(env.devDir, 'fuse'))) {
        throw new StevedError('ERR_STEVED_NO_DEVICE', `${env.devDir}/fuse does not exist`, 'load the fuse module (modprobe fuse) or give the container /dev/fuse')
      }
      if (process.getuid?.() !== 0 && !/^\s*user_allow_other\s*$/m.test(safeRead('/etc/fuse.conf'))) {
        throw new StevedError('ERR_STEVED_PERMISSION', 'serving the FUSE file to all users needs root', "run steved as root (it can drop privileges with --user), or add 'user_allow_other' to /etc/fuse.conf")
      }
      prepare()
      const options = ['allow_other', 'default_permissions', 'fsname=steved', 'subtype=steved'].join(',')
      const r = session.mountFile(file, options, access.mode, 0, access.gid)
      if (r !== 0) {
        throw new StevedError('ERR_STEVED_MOUNT', `mounting ${where} failed (${r})`, 'see the libfuse message above; is /dev/fuse accessible and are you root?')
      }
      // A handle on the mount itself: if someone renames a directory above it, the path we were
      // given names nothing, but /proc/self/fd/N still leads to the mount. O_PATH opens without
      // sending FUSE a request (none could be answered: this thread serves them).
      try {
        mountFd = fs.openSync(file, O_PATH)
      } catch (e) {
        env.log('warn', `cannot keep a handle on the mount (${(e as NodeJS.ErrnoException).code}); a rename of its directory would keep it from being unmounted`)
      }
      return { transport: 'fuse', path: file, makeflags: `--jobserver-auth=fifo:${file}` }
    },
    async ready(dropsPrivileges: boolean): Promise<void> {
      if (dropsPrivileges) armUnmounter()
    },
    unmountPath: () => (mountFd !== null ? `/proc/self/fd/${mountFd}` : undefined),
    close(): void {
      if (mountFd !== null) fs.closeSync(mountFd)
      mountFd = null
    },
  }
}

/** A CUSE character device /dev/<devName>. */
export function cuseDevice(devName: string, access: Access, env: TransportEnv): Endpoint {
  const dev = path.join(env.devDir, devName)
  const where = `CUSE device ${dev}`
  return {
    kind: 'cuse',
    where,
    open(session: NativeSession): StartInfo {
      const cuse = path.join(env.devDir, 'cuse')
      if (!fs.existsSync(cuse)) {
        throw new StevedError('ERR_STEVED_NO_DEVICE', `${cuse} does not exist: this kernel has no CUSE (or the module is not loaded)`, 'run: modprobe cuse, or use --transport fuse')
      }
      if (fs.existsSync(dev)) {
        throw new StevedError('ERR_STEVED_BUSY', `${dev} already exists (another steved serving it?)`, 'stop that server first, or choose another --dev-name')
      }
      const r = session.registerDevice(devName, cuse)
      if (r === -13 || r === -1) {
        throw new StevedError('ERR_STEVED_PERMISSION', `opening ${cuse} was refused`, 'run steved as root, or give its user access to /dev/cuse')
      }
      if (r !== 0) throw new StevedError('ERR_STEVED_MOUNT', `registering ${where} failed (errno ${-r})`)
      return { transport: 'cuse', path: dev, makeflags: `--jobserver-auth=fifo:${dev}` }
    },
    async ready(): Promise<void> {
      // devtmpfs creates the node as root:root 0600; a udev rule may already have fixed it.
      for (let i = 0; i < 100 && !fs.existsSync(dev); i++) await new Promise((r) => setTimeout(r, 20))
      const st = fs.statSync(dev)
      if ((st.mode & 0o7777) === access.mode && (!access.groupSet || st.gid === access.gid)) return
      try {
        fs.chmodSync(dev, access.mode)
        if (access.groupSet) fs.chownSync(dev, st.uid, access.gid)
      } catch (e) {
        // Without root (or CAP_CHOWN/CAP_FOWNER) the node keeps what devtmpfs or udev gave it.
        env.log('warn', `cannot set the mode/group of ${dev} (${(e as NodeJS.ErrnoException).code}); install the udev rule or run steved as root`)
      }
    },
    unmountPath: () => undefined,
    close(): void {},
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
