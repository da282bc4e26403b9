// The `jobclient` command line (bin/jobclient.js calls main). Exit statuses: 0 ok, 1 jobserver
// errors, 2 usage errors; `run` passes on its command's status.
import { Command, CommanderError, InvalidArgumentError } from 'commander'
import type { Readable, Writable } from 'node:stream'
import { runAgent, AGENT_PROTOCOL_VERSION } from './agent'
import { DEFAULT_TICK_MS, DEFAULT_TOKENS_AHEAD, runFifoBridge } from './fifo'
import { defaultPaths, runCommand } from './run'

/** Everything the CLI touches; bin/jobclient.js passes the real process. */
export interface CliIo {
  env: NodeJS.ProcessEnv
  stdin: Readable
  stdout: Writable
  stderr: Writable
  signals: NodeJS.EventEmitter
}

function nonNegativeInt(value: string): number {
  if (!/^(0|[1-9]\d*)$/.test(value)) throw new InvalidArgumentError('must be an integer >= 0.')
  return Number(value)
}

function positiveInt(value: string): number {
  if (!/^[1-9]\d*$/.test(value)) throw new InvalidArgumentError('must be an integer >= 1.')
  return Number(value)
}

const ENVIRONMENT_HELP = `
Where the jobserver is:
  --jobserver PATH if given; else the first of CARGO_MAKEFLAGS, MAKEFLAGS, MFLAGS that is set
  (its last --jobserver-auth=fifo:PATH or =R,W); if none is set, steved's default paths
  (${defaultPaths({}).join(', ')}; override with JOBCLIENT_DEFAULT_PATHS=a:b).
`

const RUN_HELP = `
Holds N tokens while COMMAND runs, and gives them back when it ends. COMMAND gets
MAKEFLAGS=--jobserver-auth=fifo:PATH (no -j), so a make, ninja or cargo inside shares the pool,
the token held being its implicit slot. Do not pass -j to make or ninja: it turns the jobserver
off (a warning says so). Older make (< 4.4) gets the jobserver as fds 3,4 instead.
${ENVIRONMENT_HELP}
Exit status: COMMAND's; 128+N if signal N killed it; 127 if it was not found, 126 if it could
not be run; 1 on jobserver errors; 2 on usage errors. SIGINT, SIGTERM and SIGHUP are passed
to COMMAND; the tokens go back once it has exited.

Examples:
  jobclient run -- make            make's jobs share the pool, the first one on our token
  jobclient run -n 4 -- ./test.sh  a script that runs 4 things at once
`

const FIFO_HELP = `
For clients that accept only a real named pipe (released ninja 1.13.x, cc-rs,
gnumake-tokenpool, LLVM before 22), which refuse steved's FUSE file or CUSE device ("Not a
fifo path") and would run unthrottled. COMMAND gets MAKEFLAGS=--jobserver-auth=fifo:PIPE (no
-j; other flags kept), PIPE being a FIFO in a private directory that this process feeds from
the jobserver: it keeps K tokens waiting in the pipe, replaces each one COMMAND takes, and
returns those COMMAND writes back beyond K. steved accounts every token to this process; if it
dies, steved takes them back and COMMAND is killed (setpriv --pdeathsig). COMMAND's own first
job is its implicit slot, as for a make started from a shell.

K trades parallelism against idle tokens: ninja 1.13 reads only when one of its jobs ends, so
with K = 0 it runs one job at a time, and each of the K bytes is a token nobody else can use
meanwhile. Default ${DEFAULT_TOKENS_AHEAD} (measured in bench/ninja; packages/jobclient/README.md).
${ENVIRONMENT_HELP}
Exit status: COMMAND's; 128+N if signal N killed it; 127/126 if it could not be run; 1 on
jobserver errors; 2 on usage errors. SIGINT, SIGTERM and SIGHUP are passed to COMMAND.

Examples:
  jobclient fifo -- ninja -C build          released ninja on steved's pool
  NINJA="jobclient-ninja" meson compile -C build
  jobclient fifo -- cargo build             cc-rs inside build scripts joins the pool too
`

const AGENT_HELP = `
A line protocol on stdin/stdout for shims in other languages (protocol ${AGENT_PROTOCOL_VERSION}):
  (start)         -> ready ${AGENT_PROTOCOL_VERSION}          or "err CODE MESSAGE" and exit 1
  acquire [N]     -> ok ID...            waits; N tokens at once when N is given
  try-acquire     -> ok ID               or err ERR_JOBSERVER_WOULD_BLOCK ...
  release ID...   -> ok                  or err ERR_JOBSERVER_UNKNOWN_TOKEN ...
  release-all     -> ok COUNT
  cancel          -> ok COUNT            waiting acquires answer err ABORT_ERR first
  held            -> ok [ID...]
  makeflags       -> ok VALUE            MAKEFLAGS for your children
  quit            -> ok                  then as EOF
One reply line per request, in request order. EOF on stdin gives every token back and exits 0.
${ENVIRONMENT_HELP}`

function packageVersion(): string {
  // dist/cli.js -> ../package.json
  return (require('../package.json') as { version: string }).version
}

/** Build the program; actions resolve `exit` with the status to exit with. */
export function createProgram(io: CliIo, exit: (status: number) => void): Command {
  const program = new Command('jobclient')
  program
    .description('Take GNU make jobserver tokens for commands and scripts (steved, make, any fifo: jobserver).')
    .version(packageVersion(), '-V, --version')
    .enablePositionalOptions()
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      // One line: "jobclient: error: unknown option '--x' (see 'jobclient --help')".
      outputError: (s, write) =>
        write(`jobclient: ${s.trim().replace(/\s*\n\s*\(Did you mean (.*)\?\)/, '; did you mean $1?').replace(/\s*\n\s*/g, ' ')} (see 'jobclient --help')\n`),
    })
    .exitOverride()

  program
    .command('run')
    .description('hold N jobserver tokens while COMMAND runs')
    .usage('[-n N] [--jobserver PATH] -- COMMAND [ARGS...]')
    .option('-n, --tokens <N>', 'tokens to hold', positiveInt, 1)
    .option('--jobserver <PATH>', 'use this jobserver (FIFO, device or FUSE file) instead of the environment')
    .argument('<command...>', 'the command and its arguments')
    .passThroughOptions()
    .addHelpText('after', RUN_HELP)
    .exitOverride()
    .action(async (command: string[], opts: { tokens: number; jobserver?: string }) => {
      exit(await runCommand(command, { tokens: opts.tokens, jobserver: opts.jobserver }, io))
    })

  program
    .command('fifo')
    .description('run a client that accepts only a named pipe (released ninja, cc-rs) on the pool')
    .usage('[--tokens-ahead K] [--jobserver PATH] -- COMMAND [ARGS...]')
    .option('-k, --tokens-ahead <K>', 'tokens kept waiting in the pipe', nonNegativeInt, DEFAULT_TOKENS_AHEAD)
    .option('--jobserver <PATH>', 'take tokens from this jobserver instead of the environment')
    .option('--stats <FILE>', 'write what the bridge measured (JSON) to FILE at the end')
    .option('--tick <MS>', `how often the pipe is sampled, in ms (default ${DEFAULT_TICK_MS})`, positiveInt)
    .option('--optional', 'when no jobserver can be opened, warn and run COMMAND as it is')
    .argument('<command...>', 'the command and its arguments')
    .passThroughOptions()
    .addHelpText('after', FIFO_HELP)
    .exitOverride()
    .action(async (command: string[], opts: { tokensAhead: number; jobserver?: string; stats?: string; tick?: number; optional?: boolean }) => {
      exit(
        await runFifoBridge(
          command,
          { tokensAhead: opts.tokensAhead, jobserver: opts.jobserver, statsFile: opts.stats, tickMs: opts.tick, optional: opts.optional },
          io,
        ),
      )
    })

  program
    .command('agent')
    .description('serve tokens over a line protocol on stdin/stdout (for Python and shell shims)')
    .option('--jobserver <PATH>', 'use this jobserver (FIFO, device or FUSE file) instead of the environment')
    .option('--implicit-slot', 'the first concurrent token is the implicit slot (no read), as inside a make recipe')
    .addHelpText('after', AGENT_HELP)
    .exitOverride()
    .action(async (opts: { jobserver?: string; implicitSlot?: boolean }) => {
      exit(
        await runAgent(
          { jobserver: opts.jobserver, implicitSlot: opts.implicitSlot },
          { env: io.env, input: io.stdin, output: io.stdout, stderr: io.stderr },
        ),
      )
    })

  program.addHelpText('after', `${ENVIRONMENT_HELP}\nRun 'jobclient run --help', 'jobclient fifo --help' or 'jobclient agent --help' for details.\n`)
  return program
}

/** Parse `args` (without node and script) and run; resolves with the exit status. */
export async function main(args: readonly string[], io?: CliIo): Promise<number> {
  const realIo: CliIo = io ?? {
    env: process.env,
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    signals: process,
  }
  let status = 0
  const program = createProgram(realIo, (s) => {
    status = s
  })
  if (args.length === 0) {
    program.outputHelp({ error: true })
    return 2
  }
  try {
    await program.parseAsync([...args], { from: 'user' })
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version are successes; every other commander error is a usage error.
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.help' || e.code === 'commander.version' ? 0 : 2
    }
    realIo.stderr.write(`jobclient: error: ${(e as Error).message}\n`)
    return 1
  }
  return status
}
