// `jobclient agent`: the line protocol that shims in other languages use, driven as a real
// process through pipes (and from bash and Python, as the shims will).
import { spawn, type ChildProcess } from 'node:child_process'
import * as readline from 'node:readline'
import t, { type Test } from 'tap'
import { run } from '../../../test/helpers/proc'
import { JOBCLIENT_BIN, makePool, type FifoPool } from './helpers/pool'

interface Agent {
  child: ChildProcess
  /** Send one request line. */
  send(line: string): void
  /** The next reply line (fails the test after 20 s without one). */
  next(): Promise<string>
  /** Send a request and return its reply. */
  ask(line: string): Promise<string>
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

function agent(t: Test, env: NodeJS.ProcessEnv, args: string[] = []): Agent {
  const child = spawn(process.execPath, [JOBCLIENT_BIN, 'agent', ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  )
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  const lines: string[] = []
  const waiters: Array<(l: string) => void> = []
  readline.createInterface({ input: child.stdout! }).on('line', (l) => {
    const w = waiters.shift()
    if (w) w(l)
    else lines.push(l)
  })
  const next = () =>
    new Promise<string>((resolve, reject) => {
      const l = lines.shift()
      if (l !== undefined) return resolve(l)
      const timer = setTimeout(() => reject(new Error('no reply from the agent within 20 s')), 20000)
      waiters.push((line) => {
        clearTimeout(timer)
        resolve(line)
      })
    })
  const send = (line: string) => child.stdin!.write(`${line}\n`)
  return {
    child,
    send,
    next,
    ask: (line) => {
      send(line)
      return next()
    },
    exited,
  }
}

const envFor = (pool: FifoPool) => ({ PATH: process.env.PATH, MAKEFLAGS: `--jobserver-auth=fifo:${pool.path}` })

t.test('ready, acquire, release, held, try-acquire, makeflags', async (t) => {
  const pool = makePool(t, 'ab')
  const a = agent(t, envFor(pool))
  t.equal(await a.next(), 'ready 1')
  t.equal(await a.ask('acquire'), 'ok 1')
  t.equal(await a.ask('acquire'), 'ok 2')
  t.equal(pool.count(), 0)
  t.equal(await a.ask('held'), 'ok 1 2')
  t.match(await a.ask('try-acquire'), /^err ERR_JOBSERVER_WOULD_BLOCK /)
  t.equal(await a.ask('release 1'), 'ok')
  t.equal(pool.count(), 1)
  t.equal(await a.ask('try-acquire'), 'ok 3')
  t.equal(await a.ask('release 2 3'), 'ok', 'several ids at once')
  t.equal(await a.ask('held'), 'ok')
  t.equal(pool.count(), 2)
  t.equal(await a.ask('makeflags'), `ok --jobserver-auth=fifo:${pool.path}`)
  t.equal(await a.ask('  '.concat('held')), 'ok', 'blanks around a request are fine')
})

t.test('errors: one err line with a code, and no effect', async (t) => {
  const pool = makePool(t, 'ab')
  const a = agent(t, envFor(pool))
  await a.next()
  t.equal(await a.ask('acquire'), 'ok 1')
  const cases: Array<[string, string]> = [
    ['release 9', 'ERR_JOBSERVER_UNKNOWN_TOKEN'],
    ['release 1 9', 'ERR_JOBSERVER_UNKNOWN_TOKEN'],
    ['release x', 'ERR_JOBSERVER_UNKNOWN_TOKEN'],
    ['release 1 1', 'ERR_JOBSERVER_PROTOCOL'],
    ['release', 'ERR_JOBSERVER_PROTOCOL'],
    ['acquire 0', 'ERR_JOBSERVER_PROTOCOL'],
    ['acquire two', 'ERR_JOBSERVER_PROTOCOL'],
    ['acquire 1 2', 'ERR_JOBSERVER_PROTOCOL'],
    ['frobnicate', 'ERR_JOBSERVER_PROTOCOL'],
  ]
  for (const [req, code] of cases) {
    const reply = await a.ask(req)
    t.match(reply, new RegExp(`^err ${code} \\S`), `${req} -> ${reply}`)
  }
  t.equal(pool.count(), 1, 'token 1 is still held: "release 1 9" released nothing')
  t.equal(await a.ask('held'), 'ok 1')
  t.equal(await a.ask('release 1'), 'ok')
})

t.test('a release sent while an acquire waits takes effect at once; replies stay in order', async (t) => {
  const pool = makePool(t, 'a')
  const a = agent(t, envFor(pool))
  await a.next()
  t.equal(await a.ask('acquire'), 'ok 1')
  a.send('acquire')
  a.send('release 1')
  t.equal(await a.next(), 'ok 2', 'the waiting acquire got the released token...')
  t.equal(await a.next(), 'ok', '...and the release answers after it')
  t.equal(pool.count(), 0)
})

t.test('acquire N, and cancel of waiting acquires', async (t) => {
  const pool = makePool(t, 'abc')
  const a = agent(t, envFor(pool))
  await a.next()
  t.equal(await a.ask('acquire 2'), 'ok 1 2')
  a.send('acquire 2')
  a.send('cancel')
  t.match(await a.next(), /^err ABORT_ERR /, 'the waiting acquire is cancelled')
  t.equal(await a.next(), 'ok 1', 'cancel says how many it cancelled')
  t.equal(pool.count(), 1, 'the cancelled acquire 2 holds nothing')
  t.equal(await a.ask('release-all'), 'ok 2')
  t.equal(pool.count(), 3)
})

t.test('EOF on stdin gives everything back, cancels waiters, exits 0', async (t) => {
  const pool = makePool(t, 'ab')
  const a = agent(t, envFor(pool))
  await a.next()
  t.equal(await a.ask('acquire'), 'ok 1')
  t.equal(await a.ask('acquire'), 'ok 2')
  a.send('acquire')
  a.child.stdin!.end()
  t.match(await a.next(), /^err ABORT_ERR /)
  t.same(await a.exited, { code: 0, signal: null })
  t.equal(pool.count(), 2)
})

t.test('quit: ok, then as EOF', async (t) => {
  const pool = makePool(t, 'ab')
  const a = agent(t, envFor(pool))
  await a.next()
  t.equal(await a.ask('acquire'), 'ok 1')
  t.equal(await a.ask('quit'), 'ok')
  t.same(await a.exited, { code: 0, signal: null })
  t.equal(pool.count(), 2)
})

t.test('SIGTERM: tokens back, the agent dies by the signal', async (t) => {
  const pool = makePool(t, 'ab')
  const a = agent(t, envFor(pool))
  await a.next()
  t.equal(await a.ask('acquire 2'), 'ok 1 2')
  a.child.kill('SIGTERM')
  t.equal((await a.exited).signal, 'SIGTERM')
  t.equal(pool.count(), 2)
})

t.test('--implicit-slot: the first concurrent token needs no read', async (t) => {
  const pool = makePool(t, 'a')
  const a = agent(t, envFor(pool), ['--implicit-slot'])
  await a.next()
  t.equal(await a.ask('acquire'), 'ok 1')
  t.equal(pool.count(), 1, 'nothing read')
  t.equal(await a.ask('acquire'), 'ok 2')
  t.equal(pool.count(), 0)
  t.equal(await a.ask('release 1 2'), 'ok')
  t.equal(pool.count(), 1)
})

t.test('no jobserver: the first line is an err, exit 1', async (t) => {
  const a = agent(t, { PATH: process.env.PATH, JOBCLIENT_DEFAULT_PATHS: '/nonexistent' })
  t.match(await a.next(), /^err ERR_JOBSERVER_NO_ENV /)
  t.equal((await a.exited).code, 1)
})

t.test('a bash shim holds a token around a command through a coproc', async (t) => {
  const pool = makePool(t, 'ab')
  const script = `
    set -e
    coproc AGENT { ${JSON.stringify(process.execPath)} ${JSON.stringify(JOBCLIENT_BIN)} agent; }
    read -r ready version <&"\${AGENT[0]}"; [ "$ready" = ready ]
    echo acquire >&"\${AGENT[1]}"; read -r status id <&"\${AGENT[0]}"; [ "$status" = ok ]
    echo "holding $id"
    python3 -c 'import fcntl,termios,array,os,sys; fd=os.open(sys.argv[1],os.O_RDWR|os.O_NONBLOCK); a=array.array("i",[0]); fcntl.ioctl(fd,termios.FIONREAD,a); print("pool", a[0])' "${pool.path}"
    echo "release $id" >&"\${AGENT[1]}"; read -r status <&"\${AGENT[0]}"; echo "released $status"
    exec {AGENT[1]}>&-
    wait $AGENT_PID
    echo "agent exited $?"
  `
  const r = await run('bash', ['-c', script], { env: envFor(pool) })
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /holding 1\npool 1\nreleased ok\nagent exited 0/)
  t.equal(pool.count(), 2)
})

t.test('a Python shim: one token per task, the agent as its jobserver client', async (t) => {
  const pool = makePool(t, 'ab')
  const py = `
import subprocess, sys
agent = subprocess.Popen([sys.argv[1], sys.argv[2], "agent"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
def ask(req):
    agent.stdin.write(req + "\\n"); agent.stdin.flush()
    return agent.stdout.readline().split()
assert agent.stdout.readline().split() == ["ready", "1"]
done = 0
for task in range(5):
    status, tid = ask("acquire")
    assert status == "ok", status
    done += 1
    assert ask("release " + tid) == ["ok"]
agent.stdin.close()
print("tasks", done, "agent", agent.wait())
`
  const r = await run('python3', ['-c', py, process.execPath, JOBCLIENT_BIN], { env: envFor(pool) })
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /tasks 5 agent 0/)
  t.equal(pool.count(), 2)
})
