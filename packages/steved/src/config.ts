// /etc/steved.toml: every daemon option, under the same names as the long options. The file
// is turned into option arguments placed before the command line's, so flags override it and
// one parser validates both.

import * as fs from 'node:fs'
import * as TOML from '@iarna/toml'

import { StevedError } from './errors'

export const DEFAULT_CONFIG_PATH = '/etc/steved.toml'

/** Keys the file may hold and the type of value each takes. */
const KEYS: Record<string, 'number' | 'string' | 'boolean' | 'mode'> = {
  jobs: 'number',
  'load-average': 'number',
  'min-jobs': 'number',
  'load-recheck-timeout': 'number',
  'min-memory-avail': 'number',
  'per-process-limit': 'number',
  'reservation-expiry': 'number',
  transport: 'string',
  'dev-name': 'string',
  path: 'string',
  mode: 'mode',
  group: 'string',
  user: 'string',
  'admin-group': 'string',
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
    const bad = (want: string) => new StevedError('ERR_STEVED_USAGE', `${file}: '${key}' must be ${want} (got ${JSON.stringify(value)})`, 'fix the file')
    switch (kind) {
      case 'number':
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
  }
  return { path: file, argv, warnings }
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

/**
 * Read the configuration: the file --config names (which must exist), else /etc/steved.toml
 * when present, else nothing.
 */
export function loadConfig(argv: string[], defaultPath = DEFAULT_CONFIG_PATH): LoadedConfig | null {
  const explicit = configPathFromArgv(argv)
  const file = explicit ?? defaultPath
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (e) {
    if (explicit === null && (e as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw new StevedError('ERR_STEVED_USAGE', `cannot read the configuration ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`, 'check --config')
  }
  return configToArgv(text, file)
}
