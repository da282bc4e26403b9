// A plain FIFO pre-filled with tokens: the simplest real jobserver. The test keeps one O_RDWR
// fd open for the FIFO's whole life (a FIFO forgets its bytes when the last fd closes), and
// uses it to put tokens in, count them (FIONREAD) and take them out to look at their bytes.
//
// Tests import the library from dist/ (what ships, built by scripts/build.sh), not from src/:
// tap's ts-node finds no project tsconfig unless TS_NODE_PROJECT is set, and then compiles
// for ES5, where spreading or iterating a Set silently yields nothing.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { FIONREAD, loadNative } from '../../dist/native'
import { tmpDir as commonTmpDir, waitUntil as commonWaitUntil } from '../../../../test/helpers/common'

export const PKG = path.resolve(__dirname, '..', '..')
export const ROOT = process.env.STEVED_ROOT ?? path.resolve(PKG, '..', '..')
/** The CLI as installed (bin -> dist). */
export const JOBCLIENT_BIN = path.join(PKG, 'bin', 'jobclient.js')
/** Plain-JS scripts run as separate processes; they load the built library from dist/. */
export const FIXTURES = path.join(PKG, 'test', 'fixtures')
/** GNU make 4.4.x (Debian's /usr/bin/make is 4.3). */
export const MAKE44 = process.env.STEVED_MAKE44 ?? path.join(ROOT, '.venv', 'bin', 'make')

interface Teardown {
  teardown(fn: () => unknown): void
}

/** A fresh directory, removed at teardown. */
export const tmpDir = (t: Teardown, prefix = 'jobclient-test-'): string => commonTmpDir(t, prefix)

export interface FifoPool {
  path: string
  /** The test's own O_RDWR|O_NONBLOCK fd on the FIFO. */
  fd: number
  /** Tokens in the FIFO now. */
  count(): number
  put(bytes: string): void
  /** Take every token out and return them (bytes as a string). */
  drain(): string
}

export function makePool(t: Teardown, tokens: string, dir = tmpDir(t)): FifoPool {
  const file = path.join(dir, 'pool')
  const r = spawnSync('mkfifo', ['-m', '0600', file])
  if (r.status !== 0) throw new Error(`mkfifo failed: ${r.stderr}`)
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
  t.teardown(() => fs.closeSync(fd))
  const pool: FifoPool = {
    path: file,
    fd,
    count() {
      const buf = Buffer.alloc(4)
      const rc = loadNative().ioctl(fd, FIONREAD, buf)
      if (rc < 0) throw new Error(`FIONREAD failed: ${rc}`)
      return buf.readInt32LE(0)
    },
    put(bytes: string) {
      if (bytes.length > 0) fs.writeSync(fd, bytes)
    },
    drain() {
      const n = pool.count()
      if (n === 0) return ''
      const buf = Buffer.alloc(n)
      const got = fs.readSync(fd, buf)
      return buf.subarray(0, got).toString('latin1')
    },
  }
  pool.put(tokens)
  return pool
}

/** Wait until `cond` holds, checking every 10 ms; fail after `ms` (a hang guard, not a timing assertion). */
export async function waitUntil(cond: () => boolean, what: string, ms = 20000): Promise<void> {
  await commonWaitUntil(cond, what, ms, 10)
}
