// Command-line parsing for steved. Option names follow steve's, so existing configurations
// carry over. Parsing is separate from running so it can be tested without a daemon.

import { Command, CommanderError, Help, Option } from 'commander'
import * as os from 'node:os'

import { defaultAccess } from './access'
import { parseListenAddress, type ListenAddress } from './control/metrics'
import { POOL_SETTINGS, configPatch, settingFromConfig } from './control/protocol'
import { defaultConfig, type PoolConfig } from './core'
import { DEFAULT_DEV_NAME, DEFAULT_FUSE_PATH, type DaemonOptions, type Transport } from './options'
import { StevedError } from './errors'
import { minJobsProblem } from './core'
import { VERSION as VERSION_STRING } from './version'

export { VERSION } from './version'

export interface CliResult {
  options: DaemonOptions
  verbose: boolean
  debug: boolean
  /** --metrics: where to serve Prometheus/OpenMetrics text over HTTP, or null. */
  metrics: ListenAddress | null
}

const usage = (msg: string): StevedError =>
  new StevedError('ERR_STEVED_USAGE', msg, "see 'steved --help'")

function wholeNumber(flag: string, min: number, max: number) {
  return (v: string): number => {
    const t = v.trim()
    if (!/^\d+$/.test(t) || Number(t) < min || Number(t) > max) throw usage(`${flag} must be a whole number from ${min} to ${max} (got '${v}')`)
    return Number(t)
  }
}

/** Plain decimal only: Number() would also take 0x10, 1e3, Infinity and ' '. */
function positiveNumber(flag: string, allowZero: boolean, max = Number.MAX_VALUE) {
  return (v: string): number => {
    const t = v.trim()
    const n = Number(t)
    if (!/^(\d+\.?\d*|\.\d+)$/.test(t) || n < 0 || (!allowZero && n === 0) || n > max) {
      const range = `${allowZero ? '>= 0' : '> 0'}${max === Number.MAX_VALUE ? '' : ` and <= ${max}`}`
      throw usage(`${flag} must be a decimal number ${range} (got '${v}')`)
    }
    return n
  }
}

/** Names of users and groups: an empty one would silently mean uid/gid 0 or nothing. */
function nonEmpty(flag: string) {
  return (v: string): string => {
    if (v.trim() === '') throw usage(`${flag} must name a group or user (got an empty string)`)
    return v
  }
}

function octalMode(v: string): number {
  if (!/^0?[0-7]{3}$/.test(v)) throw usage(`--mode must be octal permission bits such as 0660 (got '${v}')`)
  return parseInt(v, 8)
}

/**
 * One option per pool setting of the settings table, checked as the table says: whole numbers
 * within bounds; other numbers plain decimals > 0 (>= 0 where 0 is allowed), at most the maximum.
 * The defaults are the core's.
 */
function poolOptions(cpus: number): Option[] {
  const defaults = defaultConfig(cpus)
  return POOL_SETTINGS.map((d) => {
    const flag = d.daemon.short ? `${d.daemon.short}/--${d.name}` : `--${d.name}`
    const o = new Option(`${d.daemon.short ? `${d.daemon.short}, ` : ''}--${d.name} <${d.daemon.arg}>`, d.daemon.help ?? d.description).argParser(
      d.integer ? wholeNumber(flag, d.min, d.max) : positiveNumber(flag, d.min === 0, d.max),
    )
    const value = settingFromConfig(d, defaults)
    if (d.name === 'jobs') return o.default(value, `online CPUs, ${cpus} here`)
    return value === null ? o : o.default(value)
  })
}

/** The pool configuration the options ask for. */
function poolConfig(o: Record<string, unknown>, options: readonly Option[]): PoolConfig {
  const pool = defaultConfig(o.jobs as number)
  for (const d of POOL_SETTINGS) {
    const opt = options.find((x) => x.long === `--${d.name}`)!
    Object.assign(pool, configPatch(d, (o[opt.attributeName()] as number | undefined) ?? null))
  }
  return pool
}

export function buildCommand(): Command {
  const cpus = os.availableParallelism()
  const cmd = new Command('steved')
    // One line per paragraph: commander wraps each line to the terminal's width itself, so a
    // line break written here would end a line mid-sentence. Indented lines are examples.
    .description(
      [
        'A system-wide GNU make jobserver. Serves N job tokens to every make, ninja, cargo, GCC LTO, Portage and pytest on this ' +
          'machine, from a CUSE device (/dev/steve) or, where the kernel has no CUSE, a FUSE-mounted regular file. Point clients ' +
          'at it with this (and no -j in MAKEFLAGS or NINJAOPTS):',
        '  MAKEFLAGS=--jobserver-auth=fifo:PATH',
        'On Gentoo, /etc/portage/make.conf (32: your CPUs):',
        '  MAKEOPTS="-j32 -l32"',
        '  NINJAOPTS="-l32"',
        '  MAKEFLAGS="-l32 --jobserver-auth=fifo:/dev/steve"',
        'emake leaves MAKEOPTS out when MAKEFLAGS is set (Portage >= 3.0.72; older ones with the emerge shim), so make stays in ' +
          'the pool, while ebuilds that read N from MAKEOPTS still get it. The shim, in /etc/portage/bashrc, also gives each ' +
          'package job one token (see its README).',
        'Tokens are counted per process and taken back the moment a holder exits. SIGUSR1 prints holders, waiters and ' +
          'reservations to stderr; SIGHUP re-reads the configuration; SIGTERM/SIGINT stop cleanly. `stevectl` reads and changes ' +
          'settings while it runs.',
      ].join('\n'),
    )
    .version(VERSION_STRING, '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'show this help and exit')
  // The pool settings, from the settings table; then the daemon's own options.
  for (const o of poolOptions(cpus)) cmd.addOption(o)
  return cmd
    .addOption(new Option('--transport <kind>', 'cuse: a character device; fuse: a FUSE-mounted file; auto: cuse if /dev/cuse exists').choices(['auto', 'fuse', 'cuse']).default('auto'))
    .addOption(new Option('--dev-name <name>', 'CUSE device name: /dev/<name>').default(DEFAULT_DEV_NAME))
    .addOption(new Option('--path <file>', 'the regular file the FUSE transport mounts over').default(DEFAULT_FUSE_PATH))
    .addOption(new Option('--mode <octal>', 'permission bits of the file or device (default: 0660 for group jobserver when it exists, else 0600, root only; 0666 lets anyone take tokens)').argParser(octalMode))
    .addOption(new Option('--group <group>', 'group owning the file or device (e.g. jobserver, with --mode 0660)').argParser(nonEmpty('--group')))
    .addOption(new Option('-u, --user <user>', 'drop to this user once the file or device is set up').argParser(nonEmpty('-u/--user')))
    .addOption(new Option('--admin-group <group>', 'members of this group may change settings at runtime (stevectl --set-*); root always may').argParser(nonEmpty('--admin-group')))
    .addOption(new Option('--pressure-cgroup <dir>', 'read pressure for --max-*-pressure from this cgroup v2 directory (its cpu.pressure, memory.pressure, io.pressure) instead of the whole machine (/proc/pressure)').argParser(nonEmpty('--pressure-cgroup')))
    .addOption(new Option('--config <file>', 'TOML file with these options under their long names; flags override it; SIGHUP re-reads it').default('/etc/steved.toml', '/etc/steved.toml if present'))
    .addOption(new Option('-v, --verbose', 'log start-up (settings), every client process exit and the tokens reclaimed from it'))
    .addOption(new Option('-d, --debug', 'log every request'))
    .addOption(
      new Option('--metrics <[host:]port>', 'serve Prometheus/OpenMetrics text at http://HOST:PORT/metrics (host defaults to 127.0.0.1; off by default)').argParser(
        (v: string) => {
          try {
            return parseListenAddress(v)
          } catch (e) {
            throw usage(`--metrics: ${(e as Error).message}`)
          }
        },
      ),
    )
    .allowExcessArguments(false)
    .exitOverride()
    .configureOutput({ writeErr: () => {} })
    .configureHelp({ formatItem: narrowFormatItem })
}

/**
 * commander prints an option's description beside it and, when fewer than 40 columns are left
 * for it, leaves it unwrapped (a terminal then breaks it anywhere). There, put the description
 * on its own lines under the option instead, wrapped to the terminal.
 */
function narrowFormatItem(this: Help, term: string, termWidth: number, description: string, helper: Help): string {
  const width = helper.helpWidth ?? 80
  if (!description || width - termWidth - 4 >= helper.minWidthToWrap) return Help.prototype.formatItem.call(this, term, termWidth, description, helper)
  const indent = ' '.repeat(6)
  return `  ${term}\n${helper.boxWrap(description, width - indent.length).replace(/^/gm, indent)}`
}

/**
 * Check one option argument alone, such as '--jobs=0' from the configuration file, so that a bad
 * value is reported with the file's key, line and column. The reason, or null when it is good.
 */
export function checkOptionArg(arg: string): string | null {
  try {
    buildCommand()
      .configureOutput({ writeOut: () => {}, writeErr: () => {} })
      .parse([arg], { from: 'user' })
    return null
  } catch (e) {
    const msg = e instanceof StevedError ? e.message : e instanceof CommanderError ? e.message.replace(/^error: /, '') : null
    if (msg === null) throw e
    // "-j/--jobs must be ..." -> "must be ..."; commander's "option '--x <y>' argument 'z' is invalid. ..."
    return msg.replace(/^(-\w\/)?--[a-z-]+:? /, '').replace(/^option '[^']*' argument '([^']*)' is invalid\. /, "is invalid (got '$1'): ")
  }
}

/**
 * Parse argv (without node and script). Throws StevedError for bad input; returns null when
 * --help or --version was printed.
 */
export function parseArgs(argv: string[], write: (s: string) => void = (s) => process.stdout.write(s)): CliResult | null {
  const cmd = buildCommand().configureOutput({ writeOut: write, writeErr: () => {} })
  try {
    cmd.parse(argv, { from: 'user' })
  } catch (e) {
    if (e instanceof StevedError) throw e
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return null
      // commander puts "(Did you mean --jobs?)" on a line of its own; steved's errors are one line.
      throw usage(e.message.replace(/^error: /, '').replace(/\s*\n\s*\(Did you mean (.*)\?\)/, '; did you mean $1?'))
    }
    throw e
  }
  const o = cmd.opts()
  const name = String(o.devName)
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw usage(`--dev-name must be a plain device name such as 'steve' (got '${name}')`)
  if (/\s/.test(String(o.path))) throw usage(`--path must not contain spaces: clients cut MAKEFLAGS at the first space (got '${o.path}')`)
  const pool = poolConfig(o, cmd.options)
  const why = minJobsProblem(pool.minJobs, pool.jobs)
  if (why) throw usage(`${why}${cmd.getOptionValueSource('jobs') === 'default' ? ` (jobs is the default: the ${pool.jobs} online CPUs)` : ''}; lower min-jobs or raise jobs`)
  return {
    options: {
      pool,
      transport: o.transport as Transport,
      path: String(o.path),
      devName: name,
      ...defaultAccess(o.mode as number | undefined, (o.group as string | undefined) ?? null),
      user: (o.user as string | undefined) ?? null,
      adminGroup: (o.adminGroup as string | undefined) ?? null,
      pressureDir: (o.pressureCgroup as string | undefined) ?? undefined,
    },
    verbose: Boolean(o.verbose || o.debug),
    debug: Boolean(o.debug),
    metrics: (o.metrics as ListenAddress | undefined) ?? null,
  }
}
