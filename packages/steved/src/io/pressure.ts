// Pressure stall information (PSI): how much of the last 10 seconds tasks spent stalled on CPU,
// memory or IO, as the kernel reports it in /proc/pressure/<resource> (the whole machine) or in a
// cgroup v2 directory's <resource>.pressure (that cgroup only).
//
// Read on the pool's recheck timer, and only while someone waits behind a pressure limit
// (Pool.needsSample): an idle daemon reads nothing. PSI triggers (a threshold written to the
// file, then POLLPRI) would wake us sooner, but the addon's fd poll (native/fdpoll.cc) watches
// readability only, so this samples.

import * as fs from 'node:fs'
import * as path from 'node:path'

import type { PressureResource, PressureSample } from '../core'

export const DEFAULT_PRESSURE_DIR = '/proc/pressure'

/** The `some avg10` figure of one PSI file's text, or null if it has none. */
export function parseSomeAvg10(text: string): number | null {
  const m = /^some avg10=(\d+(?:\.\d+)?)\b/m.exec(text)
  return m ? Number(m[1]) : null
}

/**
 * Where one resource's pressure is read: /proc/pressure/cpu for the machine, or
 * <cgroup>/cpu.pressure for a cgroup v2 directory.
 */
export function pressureFile(dir: string, r: PressureResource): string {
  return path.resolve(dir) === DEFAULT_PRESSURE_DIR ? `${DEFAULT_PRESSURE_DIR}/${r}` : path.join(dir, `${r}.pressure`)
}

/**
 * Reads the pressure files of one directory. A resource whose file cannot be read (a kernel
 * without PSI, booted with psi=0, or a cgroup gone) reads as null, which blocks nothing; the
 * first failure of each resource is reported once through `warn`.
 */
export class PressureReader {
  private readonly warned = new Set<PressureResource>()

  constructor(
    readonly dir: string = DEFAULT_PRESSURE_DIR,
    private readonly warn: (msg: string) => void = () => {},
  ) {}

  /** `some avg10` of the resources asked for (the others null). */
  read(resources: readonly PressureResource[]): PressureSample {
    const out: PressureSample = { cpu: null, memory: null, io: null }
    for (const r of resources) {
      const file = pressureFile(this.dir, r)
      try {
        out[r] = parseSomeAvg10(fs.readFileSync(file, 'latin1'))
        if (out[r] === null) throw new Error('no "some avg10=" line')
        this.warned.delete(r)
      } catch (e) {
        if (!this.warned.has(r)) {
          this.warned.add(r)
          this.warn(`cannot read ${r} pressure from ${file} (${(e as Error).message}): the ${r} pressure limit is not applied until it can be read`)
        }
      }
    }
    return out
  }
}

/** Why `dir` cannot serve pressure for `resources`, or null when every file reads. */
export function pressureDirProblem(dir: string, resources: readonly PressureResource[]): string | null {
  for (const r of resources) {
    const file = pressureFile(dir, r)
    try {
      if (parseSomeAvg10(fs.readFileSync(file, 'latin1')) === null) return `${file} has no "some avg10=" line`
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      return `cannot read ${file} (${code ?? (e as Error).message})`
    }
  }
  return null
}
