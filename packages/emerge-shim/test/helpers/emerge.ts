// Shared helpers of the emerge-shim tests (the real-Portage test bed is in portage.ts):
// recipes and Makefiles that record what the tests assert on ("start NAME NS" / "end NAME NS"),
// the user's bashrc as the README writes it, steved's status document, and process tags:
// every process a test starts carries STEVED_EMERGE_TEST=<tag> in its environment (the holder
// inherits it too) and is SIGKILLed at teardown, whatever happened.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { waitUntil as commonWaitUntil } from '../../../../test/helpers/common'
import { run } from '../../../../test/helpers/proc'
import { MAKE44, ROOT, type RunningSteved } from '../../../../test/helpers/steved'

export const PKG = path.resolve(__dirname, '..', '..')
export const HELPER_BIN = path.join(PKG, 'bin', 'steved-emerge-shim.js')
export const MODULE = path.join(PKG, 'share', 'steved-jobserver.bashrc')
export const STEVECTL = path.join(ROOT, 'packages', 'steved', 'bin', 'stevectl.js')
export { MAKE44 }

interface Teardown {
  teardown(fn: () => unknown): void
}

/** The live processes started with STEVED_EMERGE_TEST=tag, with their argv. */
export function tagged(tag: string): Array<{ pid: number; argv: string[] }> {
  const entry = `STEVED_EMERGE_TEST=${tag}`
  const out: Array<{ pid: number; argv: string[] }> = []
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue
    try {
      if (fs.readFileSync(`/proc/${name}/environ`, 'utf8').split('\0').includes(entry)) {
        const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8')
        const argv = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').slice(0, -1)
        if (!/\) [ZX] /.test(stat)) out.push({ pid: Number(name), argv })
      }
    } catch {
      // gone, or a kernel thread
    }
  }
  return out
}

export function taggedPids(tag: string): number[] {
  return tagged(tag).map((p) => p.pid)
}

/** Whether the process runs (exists and is not a zombie). */
export function alive(pid: number): boolean {
  try {
    return !/\) [ZX] /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/** A tag for this test's processes; they are all SIGKILLed at teardown. Never throws. */
export function processTag(t: Teardown): string {
  const tag = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`
  t.teardown(async () => {
    for (let i = 0; i < 50; i++) {
      const pids = taggedPids(tag)
      if (pids.length === 0) return
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {
          // already gone
        }
      }
      await sleep(100)
    }
  })
  return tag
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Wait until `pred` holds, or fail with `what` after `ms` (a deadlock guard, not a measurement). */
export function waitUntil<T>(pred: () => T | undefined | null | false, what: string, ms = 60_000): Promise<T> {
  return commonWaitUntil(pred, what, ms, 50)
}

/** /etc/portage/bashrc as the README tells users to write it. */
export function writeUserBashrc(dir: string): string {
  const file = path.join(dir, 'bashrc')
  fs.writeFileSync(
    file,
    `# /etc/portage/bashrc\n` +
      `if [[ -r ${MODULE} ]]; then\n` +
      `\tsource ${MODULE}\n` +
      `\tsteved_jobserver_hook\n` +
      `fi\n`,
  )
  return file
}

/**
 * A recipe: logs its start, optionally waits until `barrier` recipes (of the same barrier
 * directory) have started and until a gate file exists, sleeps, logs its end. The waits give
 * up after 120 s (the recipe then fails): they are deadlock guards.
 */
export function writeRecipe(dir: string): string {
  const file = path.join(dir, 'recipe.sh')
  fs.writeFileSync(
    file,
    `#!/bin/sh
# recipe.sh NAME LOG BARRIER_DIR BARRIER_N GATE SECONDS
name=$1 log=$2 bdir=$3 bn=$4 gate=$5 secs=$6
echo "start $name $(date +%s%N)" >> "$log"
if [ "$bn" -gt 0 ]; then
  : > "$bdir/$name"
  i=0
  while [ "$(ls "$bdir" | wc -l)" -lt "$bn" ]; do
    sleep 0.05; i=$((i+1)); [ $i -lt 2400 ] || { echo "recipe $name: barrier of $bn not reached" >&2; exit 1; }
  done
fi
if [ "$gate" != - ]; then
  i=0
  while [ ! -e "$gate" ]; do
    sleep 0.05; i=$((i+1)); [ $i -lt 2400 ] || { echo "recipe $name: gate $gate never opened" >&2; exit 1; }
  done
fi
sleep "$secs"
echo "end $name $(date +%s%N)" >> "$log"
`,
  )
  return file
}

export interface MakefileOptions {
  /** Recipe names are PREFIX-0 ... PREFIX-(n-1). */
  prefix: string
  n: number
  recipe: string
  log: string
  /** Every recipe waits until this many recipes sharing `barrierDir` have started (0: no wait). */
  barrier?: number
  barrierDir?: string
  /** Every recipe waits for this file. */
  gate?: string
  seconds?: number
  /** Make the recipe PREFIX-0 fail. */
  fail?: boolean
}

/** A Makefile with n independent recipes (make runs them in parallel as far as it has slots). */
export function makefile(o: MakefileOptions): string {
  const names = Array.from({ length: o.n }, (_, i) => `${o.prefix}-${i}`)
  const args = `${o.log} ${o.barrierDir ?? '/'} ${o.barrier ?? 0} ${o.gate ?? '-'} ${o.seconds ?? 0.2}`
  return (
    `all: ${names.join(' ')}\n.PHONY: all ${names.join(' ')}\n` +
    names.map((n, i) => `${n}:\n\t@sh ${o.recipe} $@ ${args}${o.fail && i === 0 ? '; exit 1' : ''}\n`).join('')
  )
}

/** The part of steved's status document the tests read. */
export interface StatusDoc {
  pool: { jobs: number; free: number; held: number; reserved: number; waiting: number }
  holders: Array<{ pid: number; cmdline: string; tokens: number; heldForSeconds: number[] }>
  waiters: Array<{ pid: number; cmdline: string; how: string; reason: string }>
  groups: Array<{ name: string; limit: number | null; roots: number[]; members: number[]; tokens: number }>
  counters: { granted: number; returned: number; reclaimed: number }
}

/** The holder of package CATEGORY/PF in a status document (its command line names the package). */
export function holdersOf(st: StatusDoc, pkg: string): StatusDoc['holders'] {
  return st.holders.filter((h) => h.cmdline.includes(' holder ') && h.cmdline.includes(`--pkg ${pkg} `))
}

/** `stevectl status --json` against the test's steved. */
export async function stevedStatus(steved: RunningSteved): Promise<StatusDoc> {
  const r = await run(process.execPath, [STEVECTL, '--device', steved.path, 'status', '--json'], { timeoutMs: 30_000 })
  if (r.code !== 0) throw new Error(`stevectl status failed (${r.code}): ${r.stderr}`)
  return JSON.parse(r.stdout) as StatusDoc
}

/** Poll steved's status until `pred` holds (deadlock guard: fails after `ms`). */
export async function waitForStatus(steved: RunningSteved, pred: (s: StatusDoc) => boolean, what: string, ms = 60_000): Promise<StatusDoc> {
  const until = Date.now() + ms
  let s = await stevedStatus(steved)
  while (!pred(s)) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; last status: ${JSON.stringify(s)}`)
    await sleep(100)
    s = await stevedStatus(steved)
  }
  return s
}
