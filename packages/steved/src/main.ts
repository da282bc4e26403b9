// The steved process: parse, start, print how to use it, serve until a signal.

import { parseArgs, VERSION } from './cli'
import { createDaemon, type Daemon } from './daemon'
import { StevedError } from './errors'

export async function main(argv: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs(argv)
  } catch (e) {
    return fail(e)
  }
  if (parsed === null) return 0
  const { options, verbose, debug } = parsed
  const log = (level: 'info' | 'debug' | 'warn', msg: string): void => {
    if (level === 'debug' && !debug) return
    if (level === 'info' && !verbose) return
    process.stderr.write(`steved: ${level === 'warn' ? 'warning: ' : ''}${msg}\n`)
  }

  let daemon: Daemon
  try {
    daemon = createDaemon(options, { log })
  } catch (e) {
    return fail(e)
  }
  const stop = (): void => daemon.shutdown()
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  process.on('SIGHUP', () => log('warn', 'SIGHUP ignored (no configuration file to reload yet)'))
  process.on('SIGUSR1', () => process.stderr.write(daemon.report() + '\n'))

  try {
    const info = await daemon.start()
    const c = options.pool
    process.stdout.write(
      `steved ${VERSION}: serving ${c.jobs} token${c.jobs === 1 ? '' : 's'} over ${info.transport === 'cuse' ? 'CUSE device' : 'FUSE file'} ${info.path}\n` +
        `MAKEFLAGS=${info.makeflags}\n`,
    )
    if (info.transport === 'fuse') {
      process.stdout.write('note: upstream ninja only accepts real FIFOs or (master) character devices; GNU make >= 4.4, cargo, Portage and pytest work.\n')
    }
  } catch (e) {
    return fail(e)
  }
  const why = await daemon.stopped
  daemon.shutdown()
  return why === 'shut down' ? 0 : 1
}

function fail(e: unknown): number {
  if (e instanceof StevedError) {
    process.stderr.write(`steved: ${e.message}${e.hint ? ` (${e.hint})` : ''}\n`)
    return e.exitCode
  }
  const err = e as NodeJS.ErrnoException
  process.stderr.write(`steved: ${err.message ?? String(e)}\n`)
  return 1
}
