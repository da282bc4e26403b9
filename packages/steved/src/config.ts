// /etc/steved.toml: every daemon option, under the same names as the long options. The file
// is turned into option arguments placed before the command line's, so flags override it and
// one parser validates both.

import * as fs from 'node:fs'
import * as TOML from '@iarna/toml'

import { POOL_SETTINGS } from './control/protocol'
import { checkOptionArg } from './cli'
import { StevedError } from './errors'
import { minJobsProblem } from './core'

export const DEFAULT_CONFIG_PATH = '/etc/steved.toml'
/** A real configuration is well under 1 KiB; a bigger file is a mistake, and parsing it would stall token traffic. */
export const CONFIG_MAX_BYTES = 64 * 1024

/** Keys the file may hold and the type of value each takes: the pool settings of the table, then the daemon's own. */
const KEYS: Record<string, 'number' | 'string' | 'boolean' | 'mode'> = {
  ...Object.fromEntries(POOL_SETTINGS.map((d) => [d.name, 'number' as const])),
  transport: 'string',
  'dev-name': 'string',
  path: 'string',
  mode: 'mode',
  group: 'string',
  user: 'string',
  'admin-group': 'string',
  'pressure-cgroup': 'string',
  metrics: 'string',
  verbose: 'boolean',
  debug: 'boolean',
}

export interface LoadedConfig {
  path: string
  /** Option arguments equivalent to the file. */
  argv: string[]
  /** Keys that were ignored, with why. */
  warnings: string[]
}

/** Parse TOML text into option arguments. Throws StevedError (usage) naming line and column. */
export function configToArgv(text: string, file: string): LoadedConfig {
  let doc: Record<string, unknown>
  try {
    doc = TOML.parse(text) as Record<string, unknown>
  } catch (e) {
    const err = e as Error & { line?: number; col?: number }
    const where = err.line !== undefined ? `:${err.line + 1}:${(err.col ?? 0) + 1}` : ''
    const what = err.message.split('\n')[0].replace(/ at row \d+, col \d+, pos \d+:?$/, '')
    throw new StevedError('ERR_STEVED_USAGE', `${file}${where}: ${what}`, 'fix the file; the settings in force are unchanged')
  }
  const argv: string[] = []
  const warnings: string[] = []
  for (const [key, value] of Object.entries(doc)) {
    const kind = KEYS[key]
    if (!kind) {
      warnings.push(`${file}: unknown key '${key}' ignored`)
      continue
    }
    const bad = (want: string) =>
      new StevedError('ERR_STEVED_USAGE', `${file}${keyPosition(text, key)}: '${key}' must be ${want} (got ${describe(value)})`, 'fix the file')
    const before = argv.length
    switch (kind) {
      case 'number':
        // The TOML parser returns integers beyond 2^53 as BigInt (wrapped beyond 2^63).
        if (typeof value === 'bigint') throw bad(`at most ${Number.MAX_SAFE_INTEGER}`)
        if (typeof value !== 'number') throw bad('a number')
        argv.push(`--${key}=${value}`)
        break
      case 'string':
        if (typeof value !== 'string') throw bad('a string')
        argv.push(`--${key}=${value}`)
        break
      case 'mode':
        // Either "0660" (a string, as in chmod) or 0o660 (a TOML octal integer).
        if (typeof value === 'number') argv.push(`--mode=0${value.toString(8)}`)
        else if (typeof value === 'string') argv.push(`--mode=${value}`)
        else throw bad('an octal mode such as "0660"')
        break
      case 'boolean':
        if (typeof value !== 'boolean') throw bad('true or false')
        if (value) argv.push(`--${key}`)
        break
    }
    // The value in the file's words and place, not as the command-line flag it becomes.
    for (const arg of argv.slice(before)) {
      const why = checkOptionArg(arg)
      if (why !== null) throw new StevedError('ERR_STEVED_USAGE', `${file}${keyPosition(text, key)}: '${key}' ${why}`, 'fix the file')
    }
  }
  // A file that contradicts itself is wrong whatever the command line adds.
  if (typeof doc.jobs === 'number' && typeof doc['min-jobs'] === 'number') {
    const why = minJobsProblem(doc['min-jobs'], doc.jobs)
    if (why !== null) throw new StevedError('ERR_STEVED_USAGE', `${file}${keyPosition(text, 'min-jobs')}: ${why}`, 'fix the file: lower min-jobs or raise jobs')
  }
  return { path: file, argv, warnings }
}

/** What a TOML value looks like in a message (JSON.stringify cannot take a BigInt). */
function describe(value: unknown): string {
  if (typeof value === 'bigint') return 'an integer too large to be exact'
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/** ':line:column' of the value of a top-level key, for messages about values the parser accepted. */
function keyPosition(text: string, key: string): string {
  const lines = text.split('\n')
  // Keys are letters and dashes (KEYS), nothing a regular expression would misread.
  const re = new RegExp(`^(\\s*(?:${key}|"${key}"|'${key}')\\s*=\\s*)`)
  for (let i = 0; i < lines.length; i++) {
    if (/^\s*\[/.test(lines[i])) break // a table starts: top-level keys are above it
    const m = re.exec(lines[i])
    if (m) return `:${i + 1}:${m[1].length + 1}`
  }
  return ''
}

/** Where --config points on the command line, if anywhere. */
export function configPathFromArgv(argv: string[]): string | null {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--') break
    if (argv[i] === '--config') return argv[i + 1] ?? ''
    if (argv[i].startsWith('--config=')) return argv[i].slice('--config='.length)
  }
  return null
}

function refuse(file: string, why: string): StevedError {
  return new StevedError('ERR_STEVED_USAGE', `cannot read the configuration ${file}: ${why}`, 'check --config')
}

function checkStat(file: string, st: fs.Stats): void {
  if (!st.isFile()) throw refuse(file, 'not a regular file')
  if (st.size > CONFIG_MAX_BYTES) throw refuse(file, `larger than ${CONFIG_MAX_BYTES} bytes`)
}

// The file is opened with O_NONBLOCK so a FIFO at the path cannot hang us, and only a regular
// file of at most CONFIG_MAX_BYTES is read.
const OPEN_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY

// The text of a config file read into a buffer one byte larger than allowed.
function configText(buf: Buffer, n: number, file: string): string {
  if (n > CONFIG_MAX_BYTES) throw refuse(file, `larger than ${CONFIG_MAX_BYTES} bytes`)
  return buf.subarray(0, n).toString('utf8')
}

// A read of the config that failed: no config (the default path does not exist), or a refusal.
function readFailed(e: unknown, file: string, explicit: string | null): null {
  if (e instanceof StevedError) throw e
  if (explicit === null && (e as NodeJS.ErrnoException).code === 'ENOENT') return null
  throw refuse(file, String((e as NodeJS.ErrnoException).code ?? e))
}

/**
 * Read the configuration: the file --config names (which must exist), else /etc/steved.toml
 * when present, else nothing. Synchronous: for start-up, before anything is served.
 */
export function loadConfig(argv: string[], defaultPath = DEFAULT_CONFIG_PATH): LoadedConfig | null {
  const explicit = configPathFromArgv(argv)
  const file = explicit ?? defaultPath
  let text: string
  let fd: number | null = null
  try {
    fd = fs.openSync(file, OPEN_FLAGS)
    checkStat(file, fs.fstatSync(fd))
    const buf = Buffer.alloc(CONFIG_MAX_BYTES + 1)
    let n = 0
    for (let r; n < buf.length && (r = fs.readSync(fd, buf, n, buf.length - n, null)) > 0; ) n += r
    text = configText(buf, n, file)
  } catch (e) {
    return readFailed(e, file, explicit)
  } finally {
    if (fd !== null) fs.closeSync(fd)
  }
  return configToArgv(text, file)
}

/** loadConfig for a running daemon (SIGHUP): the same checks, without blocking the event loop. */
export async function loadConfigAsync(argv: string[], defaultPath = DEFAULT_CONFIG_PATH): Promise<LoadedConfig | null> {
  const explicit = configPathFromArgv(argv)
  const file = explicit ?? defaultPath
  let text: string
  let fh: fs.promises.FileHandle | null = null
  try {
    fh = await fs.promises.open(file, OPEN_FLAGS)
    checkStat(file, await fh.stat())
    const buf = Buffer.alloc(CONFIG_MAX_BYTES + 1)
    let n = 0
    for (let r; n < buf.length && (r = (await fh.read(buf, n, buf.length - n, null)).bytesRead) > 0; ) n += r
    text = configText(buf, n, file)
  } catch (e) {
    return readFailed(e, file, explicit)
  } finally {
    await fh?.close()
  }
  return configToArgv(text, file)
}
