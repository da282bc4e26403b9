// `jobclient agent`: this library behind a line protocol on stdin/stdout, for shims that are
// not written in JavaScript (the pytest plugin, the Portage bash hook). The agent process is
// the jobserver client: tokens are read and written back by it, so steved accounts them to
// its pid, and when its user dies the agent sees EOF on stdin and gives everything back.
//
// Protocol (also in README.md): one request per line, exactly one reply line per non-empty
// request, replies in request order. Effects happen when a request is read, so a `release`
// sent while an `acquire` waits takes effect at once (its `ok` follows the acquire's reply).
//   (start)            -> ready 1                 or: err CODE MESSAGE, then exit 1
//   acquire            -> ok ID
//   acquire N          -> ok ID1 ... IDN          N tokens at once (acquireMany strategy)
//   try-acquire        -> ok ID                   or: err ERR_JOBSERVER_WOULD_BLOCK ...
//   release ID...      -> ok                      or: err ERR_JOBSERVER_UNKNOWN_TOKEN ... (none released)
//   release-all        -> ok COUNT
//   cancel             -> ok COUNT                waiting acquires first answer err ABORT_ERR ...
//   held               -> ok [ID...]
//   makeflags          -> ok VALUE                MAKEFLAGS for a child of the shim
//   quit               -> ok                      then as EOF
//   (EOF on stdin)     waiting acquires are cancelled, every token goes back, exit 0
// Errors: `err CODE MESSAGE`, CODE one of ERR_JOBSERVER_*, ABORT_ERR or a system error code.
import * as readline from 'node:readline'
import type { Readable, Writable } from 'node:stream'
import type { JobClient, Token } from './client'
import { JobserverError, errorParts } from './errors'
import { makeflagsForChild } from './makeflags'
import { describeError } from './errors'
import { openForCli } from './run'

/** The protocol version in the `ready` line. */
export const AGENT_PROTOCOL_VERSION = 1

/** Options of {@link runAgent}, as parsed from the command line. */
export interface AgentOptions {
  jobserver?: string
  implicitSlot?: boolean
}

/** Where the agent reads requests and writes replies. */
export interface AgentIo {
  env: NodeJS.ProcessEnv
  input: Readable
  output: Writable
  stderr: { write(s: string): unknown }
}

function errorLine(e: unknown): string {
  const { code, message } = errorParts(e)
  return `err ${code} ${message}`
}

/** Serve the protocol until EOF or `quit`; resolves with the exit status. */
export async function runAgent(options: AgentOptions, io: AgentIo): Promise<number> {
  let outputBroken = false
  const write = (line: string) => {
    if (!outputBroken) io.output.write(`${line}\n`)
  }
  let client: JobClient
  try {
    client = openForCli(io.env, options.jobserver, options.implicitSlot ?? false, true)
  } catch (e) {
    write(errorLine(e))
    io.stderr.write(`jobclient: error: ${describeError(e)}\n`)
    return 1
  }

  write(`ready ${AGENT_PROTOCOL_VERSION}`)

  // Tokens handed out, by id.
  const tokens = new Map<number, Token>()
  // Acquires still waiting; `cancel`, `quit` and EOF abort them.
  const waiting = new Set<AbortController>()
  // Reply slots in request order; a slot is written once it and all before it are filled.
  const replies: Array<{ text?: string }> = []
  const flush = () => {
    while (replies.length > 0 && replies[0].text !== undefined) write(replies.shift()!.text!)
  }
  const slot = () => {
    const s: { text?: string } = {}
    replies.push(s)
    return (text: string) => {
      s.text = text
      flush()
    }
  }
  const cancelAll = () => {
    const n = waiting.size
    for (const c of [...waiting]) c.abort()
    return n
  }

  const rl = readline.createInterface({ input: io.input, crlfDelay: Infinity })
  io.output.on('error', () => {
    // The reader is gone (EPIPE): same as EOF.
    outputBroken = true
    rl.close()
  })

  const acquire = (n: number, answer: (text: string) => void) => {
    const ctl = new AbortController()
    waiting.add(ctl)
    const p = n === 1 ? client.acquire({ signal: ctl.signal }).then((t) => [t]) : client.acquireMany(n, { signal: ctl.signal })
    p.then(
      (ts) => {
        for (const t of ts) tokens.set(t.id, t)
        answer(`ok ${ts.map((t) => t.id).join(' ')}`)
      },
      (e) => answer(errorLine(e)),
    ).finally(() => waiting.delete(ctl))
  }

  const handle = (line: string): boolean => {
    const words = line.trim().split(/\s+/)
    if (words[0] === '') return true
    const answer = slot()
    const [cmd, ...args] = words
    try {
      switch (cmd) {
        case 'acquire': {
          if (args.length > 1 || (args.length === 1 && !/^[1-9]\d*$/.test(args[0]))) {
            throw new JobserverError('ERR_JOBSERVER_PROTOCOL', `usage: acquire [N], N >= 1`)
          }
          acquire(args.length === 1 ? Number(args[0]) : 1, answer)
          return true
        }
        case 'try-acquire': {
          const t = client.tryAcquire()
          if (!t) throw new JobserverError('ERR_JOBSERVER_WOULD_BLOCK', 'no token is free now')
          tokens.set(t.id, t)
          answer(`ok ${t.id}`)
          return true
        }
        case 'release': {
          if (args.length === 0) throw new JobserverError('ERR_JOBSERVER_PROTOCOL', 'usage: release ID...')
          const ts = args.map((a) => {
            const t = /^\d+$/.test(a) ? tokens.get(Number(a)) : undefined
            if (!t) throw new JobserverError('ERR_JOBSERVER_UNKNOWN_TOKEN', `no token with id '${a}' is held`)
            return t
          })
          if (new Set(ts).size !== ts.length) {
            throw new JobserverError('ERR_JOBSERVER_PROTOCOL', 'the same id is listed twice')
          }
          for (const t of ts) {
            tokens.delete(t.id)
            t.release()
          }
          answer('ok')
          return true
        }
        case 'release-all': {
          const ts = [...tokens.values()]
          tokens.clear()
          for (const t of ts) t.release()
          answer(`ok ${ts.length}`)
          return true
        }
        case 'cancel':
          answer(`ok ${cancelAll()}`)
          return true
        case 'held':
          answer(['ok', ...[...tokens.keys()].sort((a, b) => a - b)].join(' '))
          return true
        case 'makeflags':
          answer(`ok ${makeflagsForChild(undefined, client.childAuth).trim()}`)
          return true
        case 'quit':
          cancelAll()
          answer('ok')
          return false
        default:
          throw new JobserverError('ERR_JOBSERVER_PROTOCOL', `unknown request '${cmd}'`)
      }
    } catch (e) {
      answer(errorLine(e))
      return true
    }
  }

  try {
    for await (const line of rl) {
      if (!handle(line)) break
    }
  } finally {
    rl.close()
    cancelAll()
    // Let the aborted acquires write their replies (their promises settle in microtasks).
    await new Promise((r) => setImmediate(r))
    try {
      client.close()
    } catch (e) {
      io.stderr.write(`jobclient: error: giving tokens back: ${describeError(e)}\n`)
    }
  }
  return 0
}
