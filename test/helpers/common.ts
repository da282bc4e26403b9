// The small helpers every TypeScript test uses (one copy for the whole tree): a temporary
// directory removed at teardown, and waiting for a condition with a hang guard.

import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

export interface Teardown {
  teardown(fn: () => unknown): void
}

/** A fresh directory, removed at teardown (also when the test fails). */
export function tmpDir(t: Teardown, prefix = 'steved-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/**
 * Wait until `pred` returns something truthy, checking every `everyMs`, and return it; fail
 * naming `what` after `ms` (a hang guard, never a timing assertion).
 */
export async function waitUntil<T>(pred: () => T | undefined | null | false, what: string, ms = 20000, everyMs = 10): Promise<T> {
  const until = Date.now() + ms
  for (;;) {
    const v = pred()
    if (v) return v
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}
