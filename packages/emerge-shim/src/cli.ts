// The `steved-emerge-shim` command line (bin/steved-emerge-shim.js calls main). The bash
// module (share/steved-jobserver.bashrc) runs `phase`, `built` and `die`; `phase` starts `holder`.
//
// Output of `phase` and `die`: lines "info TEXT" / "warn TEXT" on stdout, for einfo / ewarn.
// They exit 0 whatever happens to the jobserver: a broken jobserver is a warning, never a
// failed build. Usage errors exit 2.
import { Command, CommanderError, InvalidArgumentError } from 'commander'
import * as path from 'node:path'
import { performance } from 'node:perf_hooks'
import { JobClient } from 'jobclient'
import { describeError } from './errors'
import { Holder } from './holder'
import { builtCommand, dieCommand, phaseCommand, statusCommand, type ShimIo } from './phase'
import { ProcFs } from './procfs'
import { StevedControl } from './steved-control'

function positiveInt(value: string): number {
  if (!/^[1-9]\d*$/.test(value)) throw new InvalidArgumentError('must be an integer >= 1.')
  return Number(value)
}

const BIN = path.join(__dirname, '..', 'bin', 'steved-emerge-shim.js')

function shimIo(): ShimIo {
  return {
    env: process.env,
    say: (level, text) => process.stdout.write(`${level} ${text.replace(/\s*\n\s*/g, ' ')}\n`),
    stderr: (s) => process.stderr.write(s),
    proc: new ProcFs(),
    self: [process.execPath, BIN],
    ppid: process.ppid,
  }
}

/** Run a user-facing command; anything unexpected becomes a warning line, exit 0. */
async function guarded(fn: (io: ShimIo) => Promise<number>): Promise<number> {
  const io = shimIo()
  try {
    return await fn(io)
  } catch (e) {
    io.say('warn', `jobserver: ${describeError(e)}`)
    return 0
  }
}

async function holderMain(o: { pkg: string; phase: string; tokens: number; group?: string; groupLimit?: number }): Promise<number> {
  const builddir = process.env.PORTAGE_BUILDDIR
  const log = (msg: string) => process.stderr.write(`${new Date().toISOString()} holder ${process.pid} ${o.pkg}: ${msg}\n`)
  if (!builddir) {
    log('PORTAGE_BUILDDIR is not set')
    return 2
  }
  let client: JobClient
  try {
    // The holder's tokens go back if it is told to stop (SIGTERM, SIGINT, SIGHUP) too.
    client = JobClient.fromEnv({ env: process.env, handleSignals: true })
  } catch (e) {
    log(`no jobserver: ${describeError(e)}`)
    process.stdout.write(`error ${describeError(e)}\n`)
    return 1
  }
  let done!: (status: number) => void
  const finished = new Promise<number>((resolve) => (done = resolve))
  const holder = new Holder(
    { builddir, pkg: o.pkg, firstPhase: o.phase, tokens: o.tokens, group: o.group && o.groupLimit ? { name: o.group, limit: o.groupLimit } : null },
    {
      client,
      proc: new ProcFs(),
      control: () => {
        try {
          return new StevedControl(client.path)
        } catch {
          return null
        }
      },
      log,
      pid: process.pid,
      now: () => performance.now(),
      onDone: (status) => done(status),
    },
  )
  try {
    await holder.listen()
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      log('another holder serves this build directory')
      process.stdout.write('busy\n')
      client.close()
      return 0
    }
    throw e
  }
  process.stdout.write('ready\n')
  const code = await finished
  // Nothing of the job is left to wait for; do not linger on a client's half-closed socket.
  setImmediate(() => process.exit(code))
  return code
}

export async function main(argv: string[]): Promise<number> {
  let status = 0
  const program = new Command('steved-emerge-shim')
  program
    .description('Portage integration of steved: one jobserver token per package job, per-package job caps.')
    .version((require('../package.json') as { version: string }).version, '-V, --version')
    .showSuggestionAfterError(false)
    .exitOverride()
  program
    .command('phase')
    .description('run by the bash module in each phase: take or keep the job token, join the build group')
    .requiredOption('--pid <pid>', "the phase's ebuild.sh process ($$)", positiveInt)
    .action(async (o: { pid: number }) => {
      status = await guarded((io) => phaseCommand(io, o.pid))
    })
  program
    .command('built')
    .description('run by the bash module before the post-install checks: the build is over, give its token back once they end')
    .requiredOption('--pid <pid>', "the misc-functions.sh process ($$)", positiveInt)
    .action(async (o: { pid: number }) => {
      status = await guarded((io) => builtCommand(io, o.pid))
    })
  program
    .command('die')
    .description('run by the die hook: the job failed, give its token back once its processes are gone')
    .requiredOption('--pid <pid>', 'the failing process ($$)', positiveInt)
    .action(async (o: { pid: number }) => {
      status = await guarded((io) => dieCommand(io, o.pid))
    })
  program
    .command('status')
    .description("print the holder's state for PORTAGE_BUILDDIR as JSON")
    .action(async () => {
      const io = shimIo()
      try {
        status = await statusCommand(io, (s) => process.stdout.write(s))
      } catch (e) {
        io.stderr(`steved-emerge-shim: ${describeError(e)}\n`)
        status = 1
      }
    })
  program
    .command('holder', { hidden: true })
    .description('the per-job token holder (started by `phase`)')
    .requiredOption('--pkg <CATEGORY/PF>')
    .requiredOption('--phase <phase>')
    .requiredOption('--tokens <n>', 'tokens to hold', positiveInt)
    .option('--group <name>')
    .option('--group-limit <n>', '', positiveInt)
    .action(async (o: { pkg: string; phase: string; tokens: number; group?: string; groupLimit?: number }) => {
      status = await holderMain(o)
    })
  try {
    await program.parseAsync(argv, { from: 'user' })
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2
    process.stderr.write(`steved-emerge-shim: ${describeError(e)}\n`)
    return 1
  }
  return status
}
