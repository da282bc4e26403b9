// MAKEFLAGS parsing: pure functions, no env, no fs. Tested by a table in test/makeflags.test.ts.
//
// What GNU make puts there (make 4.4.1 main.c, doc/make.texi "Job Slots"):
//   "ks -j4 --jobserver-auth=fifo:/tmp/GMfifo123 -- CFLAGS=-O2"
//    ^^ single-letter flags, without a dash, in the first word (a leading space means none)
//       ^^^ -jN as given on the command line (informational for a client)
//           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ the jobserver; `R,W` fds before 4.4
//                                                  ^^ command-line variables after " -- "
// Rules every careful client follows (jobserver-rs find_jobserver_auth, ninja
// ParseMakeFlagsValue, GCC, LLVM):
//   - only the LAST --jobserver-auth counts (the manual says so); --jobserver-fds, its pre-4.2
//     name, is the fallback when there is no --jobserver-auth at all;
//   - `n` among the first word's letters (dry run) means make runs nothing: no jobserver;
//   - make 4.4 appends `--jobserver-auth=-2,-2` for non-recursive children in pipe mode to say
//     "the fds you see are not the jobserver": negative fds mean no jobserver;
//   - the auth value ends at the first space, so a FIFO path cannot contain one.
import { JobserverError } from './errors'

/** Where the jobserver is: a named path (FIFO, character device or FUSE file), or two fds. */
export type JobserverAuth =
  | { readonly style: 'fifo'; readonly path: string }
  | { readonly style: 'pipe'; readonly read: number; readonly write: number }

/** What a MAKEFLAGS-style value says. */
export interface Makeflags {
  /** The jobserver, or null: none named, a dry run, or invalidated by make (`-2,-2`). */
  auth: JobserverAuth | null
  /** `n` among the flag letters, `-n` or `--dry-run`/`--just-print`/`--recon`. */
  dryRun: boolean
  /** The last auth had negative fds (make 4.4's `-2,-2`): explicitly no jobserver. */
  invalidated: boolean
  /** `-jN`/`--jobs=N` if present; `Infinity` for a bare `-j` (no limit). */
  jobs?: number
  /** `-lN`/`--load-average=N` if present; `Infinity` for a bare `-l` (no limit). */
  load?: number
}

/** The environment variables read by {@link fromEnv}, in the order they are tried. */
export const MAKEFLAGS_VARIABLES = ['CARGO_MAKEFLAGS', 'MAKEFLAGS', 'MFLAGS'] as const

/** A {@link Makeflags} plus the variable it came from. */
export interface EnvMakeflags extends Makeflags {
  /** The variable that was read. */
  source: (typeof MAKEFLAGS_VARIABLES)[number]
  /** Its value. */
  value: string
}

// Short options of GNU make that take an argument: the rest of a cluster after one of these is
// that argument, not more flags ("-Cproj" is not "-C -p -r -o -j").
const ARG_LETTERS = new Set(['C', 'f', 'I', 'j', 'l', 'o', 'W', 'E', 'O'])

/** Split at unescaped whitespace; make escapes spaces in MAKEFLAGS with a backslash. */
function splitWords(value: string): string[] {
  const words: string[] = []
  let cur = ''
  let inWord = false
  for (let i = 0; i < value.length; i++) {
    const c = value[i]
    if (c === '\\' && i + 1 < value.length) {
      cur += c + value[++i]
      inWord = true
    } else if (c === ' ' || c === '\t' || c === '\n') {
      if (inWord) words.push(cur)
      cur = ''
      inWord = false
    } else {
      cur += c
      inWord = true
    }
  }
  if (inWord) words.push(cur)
  return words
}

const INT = /^\d+$/
const FLOAT = /^\d+(\.\d*)?$|^\.\d+$/

/**
 * Parse one `--jobserver-auth=`/`--jobserver-fds=` value: `fifo:PATH` or `R,W`.
 * Returns null for negative fds (make's "no jobserver for you"). Throws ERR_JOBSERVER_BAD_AUTH.
 */
export function parseAuth(value: string): JobserverAuth | null {
  if (value.startsWith('fifo:')) {
    const path = value.slice('fifo:'.length)
    if (path === '') throw new JobserverError('ERR_JOBSERVER_BAD_AUTH', `empty FIFO path in jobserver auth '${value}'`)
    return { style: 'fifo', path }
  }
  const m = /^(-?\d+),(-?\d+)$/.exec(value)
  if (!m) {
    throw new JobserverError(
      'ERR_JOBSERVER_BAD_AUTH',
      `unsupported jobserver auth '${value}' (expected fifo:PATH or R,W)`,
    )
  }
  const read = Number(m[1])
  const write = Number(m[2])
  if (read < 0 || write < 0) return null
  return { style: 'pipe', read, write }
}

/** The value of `--jobserver-auth=` for an auth: `fifo:PATH` or `R,W`. */
export function formatAuth(auth: JobserverAuth): string {
  return auth.style === 'fifo' ? `fifo:${auth.path}` : `${auth.read},${auth.write}`
}

/**
 * Parse a MAKEFLAGS (or MFLAGS, CARGO_MAKEFLAGS) value. Pure. Throws a JobserverError with
 * code ERR_JOBSERVER_BAD_AUTH when the deciding auth option is malformed.
 */
export function parseMakeflags(value: string | undefined): Makeflags {
  const out: Makeflags = { auth: null, dryRun: false, invalidated: false }
  if (value === undefined) return out
  const words = splitWords(value)
  let i = 0
  // make writes its flag letters first, without a dash; a leading blank means there are none.
  if (words.length > 0 && !/^\s/.test(value) && !words[0].startsWith('-')) {
    scanLetters(words[0], out)
    i = 1
  }
  let auth: string | undefined
  let fds: string | undefined
  for (; i < words.length; i++) {
    const w = words[i]
    if (w === '--') break // command-line variable assignments follow
    if (w.startsWith('--')) {
      const eq = w.indexOf('=')
      const name = eq < 0 ? w : w.slice(0, eq)
      const arg = eq < 0 ? undefined : w.slice(eq + 1)
      switch (name) {
        case '--jobserver-auth':
          auth = arg ?? ''
          break
        case '--jobserver-fds':
          fds = arg ?? ''
          break
        case '--jobs':
          out.jobs = arg === undefined ? Infinity : INT.test(arg) ? Number(arg) : out.jobs
          break
        case '--load-average':
        case '--max-load':
          out.load = arg === undefined ? Infinity : FLOAT.test(arg) ? Number(arg) : out.load
          break
        case '--dry-run':
        case '--just-print':
        case '--recon':
          out.dryRun = true
          break
      }
    } else if (w.startsWith('-') && w.length > 1) {
      // A dash cluster such as "-j4", "-kj", "-l 2.5" (MFLAGS, spack's "-j N").
      const next = words[i + 1]
      if (scanLetters(w.slice(1), out, next)) i++
    }
  }
  const chosen = auth ?? fds
  if (chosen !== undefined) {
    const parsed = parseAuth(chosen)
    if (parsed === null) out.invalidated = true
    else if (!out.dryRun) out.auth = parsed
  }
  return out
}

// Scan single-letter flags; returns true when it consumed `next` as the value of -j/-l.
function scanLetters(letters: string, out: Makeflags, next?: string): boolean {
  for (let k = 0; k < letters.length; k++) {
    const c = letters[k]
    if (c === 'n') out.dryRun = true
    if (!ARG_LETTERS.has(c)) continue
    const rest = letters.slice(k + 1)
    if (c === 'j' || c === 'l') {
      const pattern = c === 'j' ? INT : FLOAT
      let v: number | undefined
      let consumed = false
      if (rest !== '') v = pattern.test(rest) ? Number(rest) : undefined
      else if (next !== undefined && pattern.test(next)) {
        v = Number(next)
        consumed = true
      } else v = Infinity
      if (v !== undefined) {
        if (c === 'j') out.jobs = v
        else out.load = v
      }
      return consumed
    }
    return false // the rest of the cluster is this option's argument
  }
  return false
}

/**
 * Find the jobserver in an environment: the first of CARGO_MAKEFLAGS, MAKEFLAGS, MFLAGS that
 * is set decides, even when it names no jobserver (as jobserver-rs and pytest-jobserver do:
 * `MAKEFLAGS= cmd` turns the jobserver off). Returns null when none of them is set.
 * Throws ERR_JOBSERVER_BAD_AUTH like {@link parseMakeflags}.
 */
export function fromEnv(env: NodeJS.ProcessEnv = process.env): EnvMakeflags | null {
  for (const source of MAKEFLAGS_VARIABLES) {
    const value = env[source]
    if (value === undefined) continue
    return { ...parseMakeflags(value), source, value }
  }
  return null
}

/**
 * The MAKEFLAGS value to give a child that must use `auth`: the original flags without any
 * jobserver option and without -j (a -j on a sub-make's command line or in its MAKEFLAGS
 * would make it ignore the jobserver), then `--jobserver-auth=...`, then the original
 * command-line variables. Pure.
 */
export function makeflagsForChild(original: string | undefined, auth: JobserverAuth): string {
  const authWord = `--jobserver-auth=${formatAuth(auth)}`
  if (original === undefined || original.trim() === '') return ` ${authWord}`
  const words = splitWords(original)
  const kept: string[] = []
  let tail: string[] = []
  let i = 0
  let letters = ''
  if (!/^\s/.test(original) && words.length > 0 && !words[0].startsWith('-')) {
    letters = words[0]
    i = 1
  }
  for (; i < words.length; i++) {
    const w = words[i]
    if (w === '--') {
      tail = words.slice(i)
      break
    }
    if (/^--(jobserver-auth|jobserver-fds|jobs)(=|$)/.test(w)) continue
    if (w.startsWith('-') && !w.startsWith('--')) {
      const j = jPosition(w.slice(1))
      if (j >= 0) {
        const before = w.slice(1, 1 + j)
        if (w.length === 2 + j && words[i + 1] !== undefined && INT.test(words[i + 1])) i++ // "-j N"
        if (before !== '') kept.push(`-${before}`)
        continue
      }
    }
    kept.push(w)
  }
  return [letters, ...kept, authWord, ...tail].join(' ')
}

// Index of a -j option inside a short-option cluster, or -1.
function jPosition(letters: string): number {
  for (let k = 0; k < letters.length; k++) {
    if (letters[k] === 'j') return k
    if (ARG_LETTERS.has(letters[k])) return -1
  }
  return -1
}
