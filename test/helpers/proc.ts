// Child processes for tests: run to completion, or start and wait for a line of output.
// Every started process is killed in teardown, even when the test fails.

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'

export interface Done {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

interface Teardown {
  teardown(fn: () => unknown): void
}

/** Run a command to its end (killed after `timeoutMs`, which then fails the caller). */
export function run(cmd: string, args: string[], opts: SpawnOptions & { timeoutMs?: number } = {}): Promise<Done> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
    let stdout = ''
    let stderr = ''
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${cmd} ${args.join(' ')} did not finish within ${opts.timeoutMs ?? 60000} ms\nstdout: ${stdout}\nstderr: ${stderr}`))
    }, opts.timeoutMs ?? 60000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

export interface Started {
  child: ChildProcess
  pid: number
  output(): string
  /** Wait until stdout has a line matching `re`; returns the match. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>
  exited: Promise<Done>
}

export function start(t: Teardown, cmd: string, args: string[], opts: SpawnOptions = {}): Started {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exited = new Promise<Done>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  )
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  return {
    child,
    pid: child.pid!,
    output: () => stdout,
    exited,
    async waitFor(re: RegExp, timeoutMs = 20000): Promise<RegExpExecArray> {
      const until = Date.now() + timeoutMs
      for (;;) {
        const m = re.exec(stdout)
        if (m) return m
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`${cmd} exited before printing ${re}: stdout ${stdout} stderr ${stderr}`)
        }
        if (Date.now() > until) throw new Error(`timed out waiting for ${re}; stdout: ${stdout} stderr: ${stderr}`)
        await new Promise((r) => setTimeout(r, 10))
      }
    },
  }
}
