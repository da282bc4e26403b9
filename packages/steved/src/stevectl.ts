// stevectl: read and change steved's settings while it runs, show its status, watch it live,
// or run a command under a token. Keeps the habits of steve's `stevie`:
//   stevectl --get-tokens --get-jobs      one value per line, in the order asked
//   stevectl --set-jobs 6                 change a setting (root or --admin-group members)
//   stevectl status [--json]              holders, waiters, reservations, counters
//   stevectl top                          a live view; q or Ctrl-C quits
//   stevectl group join NAME PID [LIMIT]  cap a process tree (with the group's others) at LIMIT tokens
//   stevectl CMD ARGS...                  run CMD holding one token (via jobclient run)

import { spawnSync } from 'node:child_process'
import { Command, CommanderError } from 'commander'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {
  ControlClient,
  DEFAULT_JOBSERVER_PATHS,
  GROUP_NAME_MAX,
  MAX_TOKENS,
  SETTINGS,
  accessGroup,
  describeProblem,
  fromEnv,
  isNotSteved,
  problemOf,
  settingByName,
  validateSetting,
  type ControlError,
  type Status,
} from 'jobclient'

import { renderDown, renderMetrics } from './control/metrics'
import { minJobsProblem } from './core'
import { VERSION } from './version'

export class CtlError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message)
  }
}

const E = os.constants.errno

export const HELP = `Usage: stevectl [--device PATH] [--get-NAME ...] [--set-NAME VALUE ...]
       stevectl [--device PATH] status [--json]
       stevectl [--device PATH] top [--interval SECONDS]
       stevectl [--device PATH] metrics [--openmetrics] [--textfile PATH]
       stevectl [--device PATH] group join NAME PID [LIMIT|none]
       stevectl [--device PATH] group remove NAME
       stevectl [--] COMMAND [ARGS...]

Talks to a running steved through the jobserver file or device itself (ioctls), so it works
wherever that path is visible. Anyone who can open it may read; changing settings needs root
or membership in steved's --admin-group.

Settings (--get-NAME prints the value, --set-NAME VALUE changes it; "none" unsets):
${SETTINGS.map((s) => `  ${(s.writable ? '' : '(read-only) ') + s.name}`.padEnd(34) + s.description).join('\n')}

Commands:
  status            a table of the pool, holders, waiters, reservations and counters
  status --json     the same as JSON (schema: packages/steved/status.schema.json, docs/control.md)
  top               a live view with a utilization history per client; q or Ctrl-C quits
  metrics           the status as Prometheus text (format 0.0.4; --openmetrics for OpenMetrics 1.0).
                    --textfile PATH writes it atomically for node_exporter's textfile collector
                    (PATH ends in .prom); when steved cannot be reached it writes steved_up 0
  group join NAME PID [LIMIT]
                    put the process tree under PID into group NAME: all its processes together
                    hold at most LIMIT tokens (per-package caps; the emerge shim uses this).
                    Allowed for your own processes, into a new group or one you created (root
                    and the admin group: any); the group ends when its last tree root exits
  group remove NAME dissolve a group you created (root and the admin group: any)
  COMMAND [ARGS]    run COMMAND holding one token, with MAKEFLAGS pointing at the pool

Options:
  --device PATH     the jobserver (default: MAKEFLAGS' fifo: path, else ${DEFAULT_JOBSERVER_PATHS[0]}, else
                    ${DEFAULT_JOBSERVER_PATHS[1]})
  -h, --help        this help
  -t                the same as --get-tokens (stevie's short option)
  -V, --version     print the version

Also installed as 'stevie' (steve's name for it): stevie CMD, stevie --get-jobs.

Exit codes: 0 ok; 1 steved not running or refused (EPERM); 2 bad usage.`

/** Find the jobserver path to talk to. */
export function findDevice(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env, exists = fs.existsSync): string {
  if (explicit) return explicit
  if (env.STEVED_DEVICE) return env.STEVED_DEVICE
  const mf = fromEnv(env)
  if (mf?.auth?.style === 'fifo') return mf.auth.path
  for (const p of DEFAULT_JOBSERVER_PATHS) if (exists(p)) return p
  throw new CtlError(
    `steved does not seem to be running: ${DEFAULT_JOBSERVER_PATHS.map((p) => `no ${p}`).join(', ')}, no fifo: jobserver in MAKEFLAGS ` +
      '(start it with "systemctl start steved" or "steved --help", or pass --device PATH)',
    1,
  )
}

/** A FIFO, a character device or a file on FUSE; anything else cannot serve tokens at all. */
function couldBeJobserver(p: string): boolean {
  try {
    const st = fs.statSync(p)
    return st.isFIFO() || st.isCharacterDevice() || (st.isFile() && fs.statfsSync(p).type === 0x65735546)
  } catch {
    return true
  }
}

/** An open connection to steved's control ioctls: jobclient's client, with stevectl's messages. */
export class Control {
  private readonly client: ControlClient

  constructor(readonly device: string) {
    try {
      this.client = new ControlClient(device)
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      const problem = problemOf(code)
      if (problem !== null) throw new CtlError(describeProblem(problem, device, problem === 'permission' ? accessGroup(device) : null), 1)
      throw new CtlError(`cannot open ${device}: ${code}`, 1)
    }
  }

  /** Run one request; a failure becomes a one-line CtlError that keeps the errno. */
  private request<T>(fn: () => T): T {
    try {
      return fn()
    } catch (e) {
      const c = e as ControlError
      if (typeof c.errno !== 'number') throw e
      const r = c.errno
      // steved stopped under an open file (stevectl top): the same words as a dead mount at open.
      if (r === -E.ENOTCONN || r === -E.ECONNABORTED) throw Object.assign(new CtlError(describeProblem('dead-mount', this.device), 1), { errno: r })
      if (r === -E.ENOTTY || (isNotSteved(c) && c.request === 'get')) {
        if (!couldBeJobserver(this.device)) throw new CtlError(describeProblem('not-a-jobserver', this.device), 1)
        throw new CtlError(`${this.device} is not a steved jobserver (it does not answer steved's control requests)`, 1)
      }
      throw Object.assign(new CtlError(`${this.device}: ${c.code}`, 1), { errno: r })
    }
  }

  get(name: string): number | null {
    const def = settingByName(name)
    if (!def) throw new CtlError(`unknown setting '${name}' (see stevectl --help)`, 2)
    return this.request(() => this.client.get(def))
  }

  set(name: string, value: number | null): void {
    const def = settingByName(name)
    if (!def) throw new CtlError(`unknown setting '${name}' (see stevectl --help)`, 2)
    const why = validateSetting(def, value)
    if (why) throw new CtlError(why, 2)
    if ((name === 'jobs' || name === 'min-jobs') && value !== null) {
      const [jobs, minJobs] = name === 'jobs' ? [value, this.get('min-jobs') ?? 0] : [this.get('jobs') ?? 0, value]
      const problem = minJobsProblem(minJobs, jobs)
      if (problem) throw new CtlError(`cannot set ${name} to ${value}: ${problem}; ${name === 'jobs' ? 'lower min-jobs first' : 'raise jobs first'}`, 2)
    }
    try {
      this.request(() => this.client.set(def, value))
    } catch (e) {
      if ((e as { errno?: number }).errno === -E.EPERM) {
        const gid = this.get('admin-group')
        const group = gid === null ? null : groupName(gid)
        throw new CtlError(
          `not allowed to change ${name}: changing settings needs root` +
            (group === null ? ' (steved was started without --admin-group)' : ` or membership in group '${group}'`),
          1,
        )
      }
      throw e
    }
  }

  /** Cap the process tree under `pid` at `limit` tokens, together with the group's other trees. */
  groupJoin(name: string, pid: number, limit: number | null): void {
    this.guarded(`put pid ${pid} into group ${name}`, () => this.request(() => this.client.groupJoin(name, pid, limit)))
  }

  groupRemove(name: string): void {
    this.guarded(`remove group ${name}`, () => this.request(() => this.client.groupRemove(name)))
  }

  private guarded(what: string, fn: () => void): void {
    try {
      fn()
    } catch (e) {
      const errno = (e as { errno?: number }).errno
      if (errno === -E.EPERM) {
        throw new CtlError(`not allowed to ${what}: the processes or the group belong to another user (a group's creator, root or the admin group may change it)`, 1)
      }
      if (errno === -E.ESRCH) throw new CtlError(`cannot ${what}: no such process`, 1)
      if (errno === -E.ENOENT) throw new CtlError(`cannot ${what}: no such group`, 1)
      throw e
    }
  }

  status(): Status {
    return this.request(() => this.client.status())
  }

  close(): void {
    this.client.close()
  }
}

function groupName(gid: number): string {
  try {
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const f = line.split(':')
      if (Number(f[2]) === gid && f[0]) return f[0]
    }
  } catch {
    /* fall through */
  }
  return String(gid)
}

const fmt = (v: number | null): string => (v === null ? 'none' : String(v))
const secs = (s: number): string => `${s.toFixed(s < 10 ? 2 : 0)}s`

export function formatStatus(st: Status): string {
  const out: string[] = []
  const p = st.pool
  out.push(`steved ${st.server.version} (pid ${st.server.pid}) serving ${st.server.transport.toUpperCase()} ${st.server.path}, up ${secs(st.server.uptimeSeconds)}`)
  out.push(`pool: ${p.free}/${p.jobs} free, ${p.held} held, ${p.reserved} reserved, ${p.waiting} waiting`)
  const s = st.settings
  out.push(
    `settings: jobs ${s.jobs}, min-jobs ${s.minJobs}, load-average ${fmt(s.loadAverage)}, load-recheck-timeout ${s.loadRecheckSeconds}s, ` +
      `min-memory-avail ${fmt(s.minMemoryAvailMiB)}, per-process-limit ${fmt(s.perProcessLimit)}, reservation-expiry ${s.reservationExpirySeconds}s`,
  )
  // Only when a pressure limit is set: most pools have none, and their output stays as it was.
  if (s.maxCpuPressure || s.maxMemoryPressure || s.maxIoPressure) {
    const now = st.lastSample?.pressure
    const item = (r: 'cpu' | 'memory' | 'io', limit: number | null) => `${r} ${limit ? `<= ${limit}%` : 'no limit'}${now && now[r] !== null ? ` (now ${now[r]}%)` : ''}`
    out.push(`pressure (PSI some avg10): ${item('cpu', s.maxCpuPressure)}, ${item('memory', s.maxMemoryPressure)}, ${item('io', s.maxIoPressure)}`)
  }
  const table = (head: string[], rows: string[][]): void => {
    const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
    const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join('  ')
    out.push(line(head))
    for (const r of rows) out.push(line(r))
  }
  out.push('')
  out.push(`HOLDERS (${st.holders.length})`)
  if (st.holders.length) table(['PID', 'TOKENS', 'HELD FOR', 'COMMAND'], st.holders.map((h) => [String(h.pid), String(h.tokens), h.heldForSeconds.map(secs).join(','), h.cmdline]))
  out.push('')
  out.push(`WAITERS (${st.waiters.length})`)
  if (st.waiters.length) table(['PID', 'HOW', 'WAITING', 'WHY', 'COMMAND'], st.waiters.map((w) => [String(w.pid), w.how, secs(w.waitingForSeconds), w.reason, w.cmdline]))
  out.push('')
  out.push(`RESERVATIONS (${st.reservations.length})`)
  if (st.reservations.length) table(['PID', 'AGE', 'EXPIRES IN', 'COMMAND'], st.reservations.map((r) => [String(r.pid), secs(r.ageSeconds), secs(r.expiresInSeconds), r.cmdline]))
  if (st.groups.length) {
    out.push('')
    out.push(`GROUPS (${st.groups.length})`)
    table(['NAME', 'TOKENS', 'LIMIT', 'ROOTS', 'MEMBERS'], st.groups.map((g) => [g.name, String(g.tokens), g.limit === null ? 'none' : String(g.limit), g.roots.join(','), g.members.join(',')]))
  }
  const c = st.counters
  out.push('')
  out.push(
    `since start: ${c.granted} granted, ${c.returned} returned, ${c.reclaimed} reclaimed, ${c.enospc} ENOSPC, ${c.interrupts} interrupted, ` +
      `${c.eagain} EAGAIN, ${c.reservationsExpired} reservations expired, peak ${c.peakHolders} holders, ${secs(c.secondsAtZeroFree)} at zero free`,
  )
  return out.join('\n')
}

const BARS = ' ▁▂▃▄▅▆▇█'

/**
 * Words joined with spaces into lines of at most `width` columns (a longer word is cut). A
 * no-break space (U+00A0) keeps a number with its unit; it is printed as a plain space.
 */
export function wrapWords(text: string, width: number): string[] {
  const words = text.split(/[ \t\n]+/).filter((w) => w !== '')
  return fill(words.map((w) => (w.length > width ? `${w.slice(0, width - 1)}…` : w)), ' ', width).map((l) => l.replace(/\u00a0/g, ' '))
}

/** Items joined by two spaces into lines of at most `width` columns; an item is never split. */
function packItems(items: string[], width: number): string[] {
  return fill(items.map((i) => (i.length > width ? `…${i.slice(i.length - width + 1)}` : i)), '  ', width)
}

/** Pieces (each at most `width` long) joined by `sep`, greedily, into lines of at most `width` columns. */
function fill(pieces: string[], sep: string, width: number): string[] {
  const lines: string[] = []
  let cur = ''
  for (const p of pieces) {
    if (cur === '') cur = p
    else if (cur.length + sep.length + p.length <= width) cur += sep + p
    else {
      lines.push(cur)
      cur = p
    }
  }
  if (cur !== '') lines.push(cur)
  return lines
}

const seconds = (ms: number): string => `${Number((ms / 1000).toFixed(2))}\u00a0s`

/**
 * One frame of `stevectl top`: the pool, a legend, then each client with its recent token
 * history. Every line fits `width` columns (a terminal that wraps would scroll the frame): the
 * header is packed item by item, the history column narrows, commands are cut.
 */
export function renderTop(st: Status, history: Map<number, number[]>, width: number, histLen: number, intervalMs: number): string {
  const p = st.pool
  width = Math.max(40, width)
  // PID(8) TOK(4) WAIT(5), the history and two spaces, at least 20 columns of command.
  const shown = Math.max(8, Math.min(histLen, width - 8 - 4 - 5 - 2 - 20))
  const lines: string[] = []
  const header = [
    `steved ${st.server.path}`,
    `${p.free}/${p.jobs} free`,
    `${p.held} held`,
    `${p.reserved} reserved`,
    `${p.waiting} waiting`,
    ...(st.lastSample ? [`load ${st.lastSample.load1}`, `mem ${st.lastSample.memAvailMiB} MiB`] : []),
    ...(['cpu', 'memory', 'io'] as const).flatMap((r) => (st.lastSample?.pressure?.[r] != null ? [`${r} pressure ${st.lastSample.pressure[r]}%`] : [])),
    `granted ${st.counters.granted}`,
    `reclaimed ${st.counters.reclaimed}`,
    `interrupted ${st.counters.interrupts}`,
    '(q quits)',
  ]
  lines.push(...packItems(header, width))
  lines.push(
    ...wrapWords(
      `TOK: tokens held now. WAIT: its reads waiting for a token. HISTORY: tokens held, one sample every ${seconds(intervalMs)}, ` +
        `the last ${seconds(intervalMs * shown)}, newest on the right; blank none, ${BARS[1]} few, ${BARS[BARS.length - 1]} all ${p.jobs}.`,
      width,
    ),
  )
  lines.push('')
  lines.push(`${'PID'.padEnd(8)}${'TOK'.padEnd(4)}${'WAIT'.padEnd(5)}${'HISTORY'.padEnd(shown + 2)}COMMAND`.slice(0, width))
  const waiting = new Map<number, number>()
  for (const w of st.waiters) waiting.set(w.pid, (waiting.get(w.pid) ?? 0) + 1)
  for (const [pid, h] of history) {
    const holder = st.holders.find((x) => x.pid === pid)
    const waiter = st.waiters.find((x) => x.pid === pid)
    // The program's name without its directory: the columns are few.
    const cmd = (holder?.cmdline ?? waiter?.cmdline ?? '(gone)').replace(/^\S*\//, '')
    const spark = h
      .slice(-shown)
      .map((n) => BARS[Math.min(BARS.length - 1, Math.ceil((n / Math.max(1, p.jobs)) * (BARS.length - 1)))])
      .join('')
    const row = `${String(pid).padEnd(8)}${String(holder?.tokens ?? 0).padEnd(4)}${String(waiting.get(pid) ?? '').padEnd(5)}${spark.padStart(shown).padEnd(shown + 2)}${cmd}`
    lines.push(row.slice(0, width))
  }
  return lines.join('\n')
}

/** Update per-client histories with one status sample; clients idle for a whole window drop out. */
export function recordHistory(st: Status, history: Map<number, number[]>, histLen: number): void {
  const now = new Map<number, number>()
  for (const h of st.holders) now.set(h.pid, h.tokens)
  for (const w of st.waiters) if (!now.has(w.pid)) now.set(w.pid, 0)
  for (const pid of now.keys()) if (!history.has(pid)) history.set(pid, [])
  for (const [pid, h] of history) {
    h.push(now.get(pid) ?? 0)
    if (h.length > histLen) h.shift()
    if (!now.has(pid) && h.every((n) => n === 0)) history.delete(pid)
  }
}

async function top(ctl: Control, intervalMs: number): Promise<number> {
  const out = process.stdout
  const history = new Map<number, number[]>()
  const histLen = 30
  const stdin = process.stdin
  let done = false
  let wake: (() => void) | null = null
  const quit = (): void => {
    done = true
    wake?.()
  }
  if (stdin.isTTY) {
    stdin.setRawMode(true)
    stdin.resume()
    stdin.on('data', (d: Buffer) => {
      if (d.includes(0x71) || d.includes(0x03)) quit() // q or Ctrl-C
    })
  }
  process.on('SIGINT', quit)
  process.on('SIGTERM', quit)
  out.write('\x1b[?25l')
  try {
    while (!done) {
      const st = ctl.status()
      recordHistory(st, history, histLen)
      out.write('\x1b[H\x1b[2J' + renderTop(st, history, out.columns ?? 120, histLen, intervalMs) + '\n')
      await new Promise<void>((r) => {
        wake = r
        setTimeout(r, intervalMs)
      })
    }
  } finally {
    out.write('\x1b[?25h')
    if (stdin.isTTY) stdin.setRawMode(false)
    stdin.pause()
  }
  return 0
}

function parseValue(name: string, v: string | undefined): number | null {
  if (v === undefined) throw new CtlError(`--set-${name} needs a value`, 2)
  if (v === 'none') return null
  const n = Number(v)
  if (v.trim() === '' || !Number.isFinite(n)) throw new CtlError(`--set-${name}: '${v}' is not a number (or "none")`, 2)
  return n
}

const COMMANDS = ['status', 'top', 'group', 'metrics']

/** Levenshtein distance, for "did you mean" on short words. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = cur
  }
  return prev[b.length]
}

/** "; did you mean 'X'?" for the closest candidate within two edits, else ''. */
export function didYouMean(word: string, candidates: readonly string[]): string {
  let best: string | null = null
  let bestD = 3
  for (const c of candidates) {
    const d = editDistance(word, c)
    if (d < bestD) [best, bestD] = [c, d]
  }
  return best === null ? '' : `; did you mean '${best}'?`
}

function onPath(cmd: string, env: NodeJS.ProcessEnv = process.env): boolean {
  for (const dir of (env.PATH ?? '').split(':')) {
    try {
      fs.accessSync(path.join(dir || '.', cmd), fs.constants.X_OK)
      return true
    } catch {
      /* not here */
    }
  }
  return false
}

/** The commander error's words as stevectl's one line (commander's own are two, with "error: "). */
function commanderLine(e: CommanderError): string {
  return e.message.replace(/^error: /, '').split('\n')[0]
}

/** Run the CLI; returns the exit code. Output goes through `write`. */
export async function stevectl(argv: string[], write: (s: string) => void = (s) => process.stdout.write(s), prog = 'stevectl'): Promise<number> {
  const help = (prog === 'stevectl' ? HELP : HELP.replace(/\bstevectl\b/g, prog)) + '\n'
  const see = `(see ${prog} --help)`
  // --get/--set in the order given: one value per line, in the order asked.
  const ops: Array<{ op: 'get' | 'set'; name: string; value?: number | null }> = []
  let code = 0
  const device = (): string | undefined => program.opts().device as string | undefined
  const withControl = async (fn: (ctl: Control) => number | Promise<number>): Promise<void> => {
    const ctl = new Control(findDevice(device()))
    try {
      code = await fn(ctl)
    } finally {
      ctl.close()
    }
  }
  /** A command's own usage errors: commander's unknown option or extra argument, in its words. */
  const strict = (c: Command, unexpected: (arg: string) => CtlError): Command =>
    c
      .helpOption(false)
      .exitOverride((e) => {
        const m = /'([^']*)'/.exec(e.message)
        if (e.code === 'commander.unknownOption' || e.code === 'commander.excessArguments' || e.code === 'commander.optionMissingArgument') {
          throw unexpected(e.code === 'commander.excessArguments' ? (c.args[c.registeredArguments.length] ?? '') : (m?.[1] ?? '').split(' ')[0])
        }
        throw e
      })
      .configureOutput({ writeOut: write, writeErr: () => {} })

  const program = new Command(prog)
    .exitOverride()
    .configureOutput({ writeOut: write, writeErr: () => {} })
    .helpOption('-h, --help')
    .helpCommand(false)
    .version(VERSION, '-V, --version')
    .option('--device <path>')
    .option('-t')
    .enablePositionalOptions()
    .passThroughOptions()
    .argument('[command...]')
  program.helpInformation = () => help
  program.on('option:t', () => ops.push({ op: 'get', name: 'tokens' })) // stevie's short --get-tokens
  for (const s of SETTINGS) {
    program.option(`--get-${s.name}`)
    program.on(`option:get-${s.name}`, () => ops.push({ op: 'get', name: s.name }))
    if (!s.writable) continue
    program.option(`--set-${s.name} <value>`, '', (v: string) => {
      ops.push({ op: 'set', name: s.name, value: parseValue(s.name, v) })
      return v
    })
  }
  program.hook('preSubcommand', (_, sub) => {
    if (ops.length) throw new CtlError(`cannot combine --get/--set with a command ('${sub.name()}')`, 2)
  })

  program.addCommand(
    strict(new Command('status').option('--json'), (a) => new CtlError(`status: unexpected '${a}'`, 2)).action(async (o: { json?: boolean }) =>
      withControl((ctl) => {
        const st = ctl.status()
        write(o.json ? JSON.stringify(st, null, 2) + '\n' : formatStatus(st) + '\n')
        return 0
      }),
    ),
  )
  program.addCommand(
    strict(new Command('top').option('--interval <seconds>'), (a) => new CtlError(`top: unexpected '${a}'`, 2)).action(async (o: { interval?: string }) => {
      const interval = o.interval === undefined ? 1 : Number(o.interval)
      if (!(interval > 0)) throw new CtlError('top: --interval must be a number of seconds > 0', 2)
      await withControl((ctl) => top(ctl, interval * 1000))
    }),
  )
  const metricsUsage = (a: string) => new CtlError(`metrics: unexpected '${a}' (usage: stevectl metrics [--openmetrics] [--textfile PATH])`, 2)
  program.addCommand(
    strict(new Command('metrics').option('--openmetrics').option('--textfile <path>'), metricsUsage).action((o: { openmetrics?: boolean; textfile?: string }) => {
      code = metricsCommand(o.textfile ?? null, Boolean(o.openmetrics), device(), write)
    }),
  )
  const groupUsage = () => new CtlError('usage: stevectl group join NAME PID [LIMIT|none] | stevectl group remove NAME', 2)
  const groupName = (op: string, name: string): void => {
    if (Buffer.byteLength(name) > GROUP_NAME_MAX) throw new CtlError(`group ${op}: NAME is at most ${GROUP_NAME_MAX} bytes (got ${Buffer.byteLength(name)})`, 2)
  }
  const group = strict(new Command('group'), groupUsage)
    .helpCommand(false)
    .action(() => {
      throw groupUsage()
    })
    .addCommand(
      strict(new Command('join').argument('<name>').argument('<pid>').argument('[limit]'), groupUsage).action(async (name: string, pidArg: string, limitArg?: string) => {
        groupName('join', name)
        if (!/^\d+$/.test(pidArg)) throw groupUsage()
        const limit = limitArg === undefined || limitArg === 'none' ? null : Number(limitArg)
        if (limit !== null && !(Number.isInteger(limit) && limit >= 1 && limit <= MAX_TOKENS)) throw new CtlError(`group join: LIMIT must be a whole number from 1 to ${MAX_TOKENS} or "none" (got '${limitArg}')`, 2)
        await withControl((ctl) => (ctl.groupJoin(name, Number(pidArg), limit), 0))
      }),
    )
    .addCommand(
      strict(new Command('remove').argument('<name>'), groupUsage).action(async (name: string) => {
        groupName('remove', name)
        await withControl((ctl) => (ctl.groupRemove(name), 0))
      }),
    )
  for (const c of group.commands) c.exitOverride((e) => {
    if (e.code === 'commander.missingArgument' || e.code === 'commander.excessArguments' || e.code === 'commander.unknownOption') throw groupUsage()
    throw e
  })
  program.addCommand(group)

  program.action(async (rest: string[]) => {
    const dashdash = argv.includes('--') && argv.indexOf('--') < argv.indexOf(rest[0] ?? '')
    // A mistyped command word would otherwise be run as a program (and fail as "spawn ENOENT").
    if (rest.length && !dashdash && !rest[0].includes('/') && !onPath(rest[0])) {
      const hint = didYouMean(rest[0], COMMANDS)
      if (hint) throw new CtlError(`'${rest[0]}' is neither a ${prog} command nor a program on PATH${hint} ${see}`, 2)
    }
    if (rest.length === 0 && ops.length === 0) {
      write(help)
      code = 2
      return
    }
    if (ops.length) {
      if (rest.length) throw new CtlError(`cannot combine --get/--set with a command ('${rest[0]}')`, 2)
      await withControl((ctl) => {
        for (const o of ops) {
          if (o.op === 'get') write(fmt(ctl.get(o.name)) + '\n')
          else ctl.set(o.name, o.value ?? null)
        }
        return 0
      })
      return
    }
    // A command: hold one token while it runs (jobclient does the acquiring and the MAKEFLAGS).
    const env = { ...process.env }
    if (device() || !fromEnv(env)?.auth) env.MAKEFLAGS = `--jobserver-auth=fifo:${findDevice(device())}`
    const jobclient = path.join(path.dirname(require.resolve('jobclient/package.json')), 'bin', 'jobclient.js')
    const r = spawnSync(process.execPath, [jobclient, 'run', '--', ...rest], { stdio: 'inherit', env })
    if (r.error) throw new CtlError(`cannot run jobclient: ${r.error.message}`, 1)
    code = r.status ?? 128 + (os.constants.signals[r.signal as NodeJS.Signals] ?? 0)
  })

  try {
    await program.parseAsync(argv, { from: 'user' })
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return 0
    const m = /'([^']*)'/.exec(e.message)
    const opt = (m?.[1] ?? '').split(' ')[0]
    if (e.code === 'commander.unknownOption') {
      const setting = /^--[gs]et-([^=]*)/.exec(opt)
      if (setting) throw new CtlError(`unknown setting '${setting[1]}'${didYouMean(setting[1], SETTINGS.map((x) => x.name))} ${see}`, 2)
      const known = ['--device', '--help', '--version', ...program.options.map((o) => o.long).filter((l): l is string => l !== undefined && l !== '--device')]
      throw new CtlError(`unknown option '${opt}'${didYouMean(opt.split('=')[0], [...new Set(known)])} ${see}`, 2)
    }
    if (e.code === 'commander.optionMissingArgument' && opt.startsWith('--set-')) throw new CtlError(`${opt} needs a value`, 2)
    throw new CtlError(commanderLine(e), 2)
  }
  return code
}

/** `stevectl metrics`: the exposition on stdout, or written atomically to a textfile. */
function metricsCommand(textfile: string | null, openmetrics: boolean, device: string | undefined, write: (s: string) => void): number {
  if (textfile !== null && openmetrics) throw new CtlError('metrics: --textfile writes the 0.0.4 text format node_exporter reads; leave out --openmetrics', 2)
  if (textfile !== null && !textfile.endsWith('.prom')) throw new CtlError(`metrics: node_exporter's textfile collector reads only *.prom files (got '${textfile}')`, 2)
  let text: string
  let failure: unknown = null
  try {
    const ctl = new Control(findDevice(device))
    try {
      text = renderMetrics(ctl.status(), openmetrics ? 'openmetrics' : 'text')
    } finally {
      ctl.close()
    }
  } catch (e) {
    if (textfile === null) throw e
    // A stale file would show the last good figures for ever; say that steved is down instead.
    failure = e
    text = renderDown()
  }
  if (textfile === null) {
    write(text)
    return 0
  }
  // Write beside the target and rename: the collector never reads a half-written file, and the
  // temporary name does not end in .prom, so it is never read at all.
  const tmp = `${textfile}.${process.pid}.tmp`
  try {
    fs.writeFileSync(tmp, text, { mode: 0o644 })
    fs.renameSync(tmp, textfile)
  } catch (e) {
    try {
      fs.unlinkSync(tmp)
    } catch {
      /* it was never created */
    }
    throw new CtlError(`metrics: cannot write ${textfile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 1)
  }
  if (failure !== null) throw failure
  return 0
}
