// The steved process: read the configuration, parse, start, print how to use it, serve until
// a signal. SIGHUP re-reads the configuration and applies it live.

import { describeAccess } from './access'
import { parseArgs, VERSION } from './cli'
import { loadConfig, loadConfigAsync } from './config'
import { isLoopback, startMetricsServer, type MetricsServer } from './control/metrics'
import { createDaemon, type Daemon } from './daemon'
import { StevedError } from './errors'

/**
 * Write to stdout or stderr without ever failing. A broken pipe (journald restarted, the
 * terminal gone) must cost log lines, not the daemon: a dead steved leaves a dead mount.
 */
export function quietWrite(stream: NodeJS.WriteStream, text: string): void {
  if (stream.destroyed || !stream.writable) return
  try {
    stream.write(text)
  } catch {
    // EPIPE from a synchronous pipe write: the 'error' listener below has it.
  }
}

const quieted = new WeakSet<NodeJS.WriteStream>()
function keepQuietOnError(stream: NodeJS.WriteStream): void {
  // Always our own listener: another one (a preloaded tool's) may rethrow.
  if (quieted.has(stream)) return
  quieted.add(stream)
  stream.on('error', () => {})
}

export async function main(argv: string[]): Promise<number> {
  keepQuietOnError(process.stdout)
  keepQuietOnError(process.stderr)
  let parsed
  let configWarnings: string[] = []
  const load = (): ReturnType<typeof parseArgs> => {
    const cfg = loadConfig(argv)
    configWarnings = cfg?.warnings ?? []
    return parseArgs([...(cfg?.argv ?? []), ...argv])
  }
  try {
    parsed = load()
  } catch (e) {
    return fail(e)
  }
  if (parsed === null) return 0
  const { options, verbose, debug } = parsed
  const log = (level: 'info' | 'debug' | 'warn', msg: string): void => {
    if (level === 'debug' && !debug) return
    if (level === 'info' && !verbose) return
    quietWrite(process.stderr, `steved: ${level === 'warn' ? 'warning: ' : ''}${msg}\n`)
  }
  for (const w of configWarnings) log('warn', w)

  let daemon: Daemon
  try {
    daemon = createDaemon(options, { log })
  } catch (e) {
    return fail(e)
  }
  const stop = (): void => daemon.shutdown()
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  process.on('SIGUSR1', () => quietWrite(process.stderr, daemon.report() + '\n'))
  // SIGHUP reads the file without blocking token traffic; a signal that comes while a reload
  // is under way runs one more reload after it, so the last write to the file always counts.
  let reloading: Promise<void> | null = null
  let again = false
  const reload = async (): Promise<void> => {
    try {
      const cfg = await loadConfigAsync(argv)
      const next = parseArgs([...(cfg?.argv ?? []), ...argv])
      for (const w of cfg?.warnings ?? []) log('warn', w)
      if (next === null) return
      const { restart, kept } = daemon.reconfigure(next.options)
      for (const k of kept) log('warn', `${k.name} stays ${k.value ?? 'none'} as set at runtime (the configuration says ${k.file ?? 'none'} and did not change)`)
      if (restart.length) log('warn', `changes to ${restart.join(', ')} take effect after a restart`)
      quietWrite(process.stderr, 'steved: configuration reloaded\n')
    } catch (e) {
      const msg = e instanceof StevedError ? `${e.message}${e.hint ? ` (${e.hint})` : ''}` : String(e)
      quietWrite(process.stderr, `steved: configuration rejected, settings unchanged: ${msg}\n`)
    }
  }
  process.on('SIGHUP', () => {
    if (reloading) {
      again = true
      return
    }
    reloading = (async () => {
      do {
        again = false
        await reload()
      } while (again)
      reloading = null
    })()
  })

  // Bound before the jobserver is served, so a taken port fails with nothing mounted.
  let metrics: MetricsServer | null = null
  let serving = false
  if (parsed.metrics) {
    try {
      metrics = await startMetricsServer(parsed.metrics, () => {
        if (!serving) throw new Error('steved is still starting')
        return daemon.status()
      })
    } catch (e) {
      const err = e as NodeJS.ErrnoException
      const code = err.code === 'EADDRINUSE' ? 'ERR_STEVED_BUSY' : err.code === 'EACCES' ? 'ERR_STEVED_PERMISSION' : 'ERR_STEVED_USAGE'
      return fail(new StevedError(code, `--metrics: cannot listen on ${parsed.metrics.host}:${parsed.metrics.port}: ${err.code ?? err.message}`, 'pick another address or port'))
    }
  }
  try {
    const info = await daemon.start()
    serving = true
    const c = options.pool
    quietWrite(
      process.stdout,
      `steved ${VERSION}: serving ${c.jobs} token${c.jobs === 1 ? '' : 's'} over ${info.transport === 'cuse' ? 'CUSE device' : 'FUSE file'} ${info.path}\n` +
        `MAKEFLAGS=${info.makeflags}\n` +
        `${describeAccess(options.mode, options.group)}\n`,
    )
    if (info.transport === 'fuse') {
      quietWrite(process.stdout, 'note: upstream ninja only accepts real FIFOs or (master) character devices; GNU make >= 4.4, cargo, Portage and pytest work.\n')
    }
    log('info', `started as pid ${process.pid} on ${info.path} (${info.transport}); settings ${JSON.stringify(daemon.server.pool.config)}`)
    if (metrics) {
      quietWrite(process.stdout, `metrics: ${metrics.url}\n`)
      if (!isLoopback(metrics.address.host)) log('warn', `--metrics listens on ${metrics.address.host}: other machines can read the pool's figures and group names`)
    }
  } catch (e) {
    metrics?.close()
    return fail(e)
  }
  const why = await daemon.stopped
  daemon.shutdown()
  metrics?.close()
  return why === 'shut down' ? 0 : 1
}

function fail(e: unknown): number {
  if (e instanceof StevedError) {
    quietWrite(process.stderr, `steved: ${e.message}${e.hint ? ` (${e.hint})` : ''}\n`)
    return e.exitCode
  }
  const err = e as NodeJS.ErrnoException
  quietWrite(process.stderr, `steved: ${err.message ?? String(e)}\n`)
  return 1
}
