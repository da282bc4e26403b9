// `jobclient fifo` as a command: usage errors, the child's MAKEFLAGS and private pipe, exit
// statuses, --optional, and the pool it feeds from (a plain make-style FIFO here: the bridge
// treats every jobserver alike; test/ninja.test.ts runs it against steved).

import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'

import { JOBCLIENT, JOBCLIENT_NINJA, NINJA } from './helpers/cbuild'
import { run } from './helpers/proc'
import { tmpDir } from './helpers/steved'

/** A make-style pool: a named pipe holding `tokens` bytes, kept open by this process. */
function pool(t: Test, dir: string, tokens: number): { path: string; count(): number } {
  const p = path.join(dir, 'pool')
  require('node:child_process').execFileSync('mkfifo', [p])
  const fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
  fs.writeSync(fd, Buffer.alloc(tokens, '+'))
  t.teardown(() => fs.closeSync(fd))
  return {
    path: p,
    count() {
      // Read everything out and put it back: the number of tokens in the pool now.
      const buf = Buffer.alloc(64)
      let n = 0
      for (;;) {
        try {
          const r = fs.readSync(fd, buf)
          if (r <= 0) break
          n += r
        } catch {
          break
        }
      }
      if (n > 0) fs.writeSync(fd, Buffer.alloc(n, '+'))
      return n
    },
  }
}

const node = process.execPath

t.test('usage errors exit 2 with one line; --help explains', async (t) => {
  const bad = await run(node, [JOBCLIENT, 'fifo', '-k', '-1', '--', 'true'])
  t.equal(bad.code, 2, 'negative K is a usage error')
  t.equal(bad.stderr.trim().split('\n').length, 1, `one line: ${bad.stderr.trim()}`)
  const none = await run(node, [JOBCLIENT, 'fifo'])
  t.equal(none.code, 2, 'no command is a usage error')
  const help = await run(node, [JOBCLIENT, 'fifo', '--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /named pipe/)
  t.match(help.stdout, /--tokens-ahead/)
})

t.test('the child gets a private FIFO in MAKEFLAGS, other flags kept, -j and old auth dropped', async (t) => {
  const dir = tmpDir(t)
  const p = pool(t, dir, 2)
  const script = path.join(dir, 'show.sh')
  fs.writeFileSync(
    script,
    '#!/bin/sh\nprintf "%s\\n" "$MAKEFLAGS"\np=${MAKEFLAGS##*fifo:}; p=${p%% *}\nstat -c "%F %a" "$p"; stat -c "%a" "$(dirname "$p")"\nexit 7\n',
    { mode: 0o755 },
  )
  const r = await run(node, [JOBCLIENT, 'fifo', '--', script], {
    env: { ...process.env, MAKEFLAGS: `kw -j8 --jobserver-auth=fifo:${p.path} -Oline` },
  })
  t.equal(r.code, 7, "the child's exit status is passed on")
  const [flags, kind, dirMode] = r.stdout.trim().split('\n')
  t.match(flags, /^kw -Oline --jobserver-auth=fifo:\S*jobclient-fifo-\w+\/jobserver$/, `MAKEFLAGS: ${flags}`)
  t.notOk(flags.split(' ').some((w) => /^-\w*j/.test(w)), 'no -j')
  t.notOk(flags.includes(p.path), 'no old auth')
  t.equal(kind, 'fifo 600', 'a real named pipe, mode 0600')
  t.equal(dirMode, '700', 'in a private directory')
  const pipe = /fifo:(\S+)/.exec(flags)![1]
  t.notOk(fs.existsSync(path.dirname(pipe)), 'the pipe and its directory are removed at the end')
  t.equal(p.count(), 2, 'every token is back in the pool')
})

t.test('exit statuses: not found 127, killed by a signal 128+N', async (t) => {
  const dir = tmpDir(t)
  const p = pool(t, dir, 1)
  const env = { ...process.env, MAKEFLAGS: `--jobserver-auth=fifo:${p.path}` }
  const missing = await run(node, [JOBCLIENT, 'fifo', '--', 'no-such-command-here'], { env })
  t.equal(missing.code, 127)
  t.match(missing.stderr, /^jobclient: error: cannot run no-such-command-here/)
  const killed = await run(node, [JOBCLIENT, 'fifo', '--', 'sh', '-c', 'kill -TERM $$'], { env })
  t.equal(killed.code, 128 + 15)
  t.equal(p.count(), 1, 'the token is back')
})

t.test('no jobserver: an error (exit 1), or with --optional a warning and the command as it is', async (t) => {
  const env: NodeJS.ProcessEnv = { ...process.env, JOBCLIENT_DEFAULT_PATHS: '/nonexistent/jobserver' }
  delete env.MAKEFLAGS
  delete env.CARGO_MAKEFLAGS
  delete env.MFLAGS
  const strict = await run(node, [JOBCLIENT, 'fifo', '--', 'true'], { env })
  t.equal(strict.code, 1)
  t.match(strict.stderr, /ERR_JOBSERVER_NO_ENV/)
  const optional = await run(node, [JOBCLIENT, 'fifo', '--optional', '--', 'sh', '-c', 'echo "[$MAKEFLAGS]"; exit 3'], { env })
  t.equal(optional.code, 3)
  t.equal(optional.stdout.trim(), '[]', 'the command runs without a jobserver')
  t.match(optional.stderr, /warning: running sh outside any pool/)
  const missing = await run(node, [JOBCLIENT, 'fifo', '--optional', '--', 'no-such-command-here'], { env })
  t.equal(missing.code, 127, 'a command not found is 127 there too, as from a shell')
  const ninja = await run(node, [JOBCLIENT_NINJA, '--version'], { env: { ...env, JOBCLIENT_NINJA: NINJA } })
  t.equal(ninja.code, 0, 'jobclient-ninja --version works without a jobserver (meson and CMake probe it)')
  t.match(ninja.stdout, /^1\.13\./)
})

t.test('K bytes wait in the pipe; what the child writes back beyond K goes back to the pool', async (t) => {
  const dir = tmpDir(t)
  const p = pool(t, dir, 4)
  const stats = path.join(dir, 'stats.json')
  // Take 3 tokens (K=3 puts them there), hold them a while, write them back, then wait so the
  // bridge sees them idle, and report how many bytes the pipe holds then.
  const script = path.join(dir, 'take.py')
  fs.writeFileSync(
    script,
    [
      'import os, time, fcntl, termios, array',
      'p = os.environ["MAKEFLAGS"].split("fifo:")[1].split()[0]',
      'fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK); w = os.open(p, os.O_WRONLY | os.O_NONBLOCK)',
      'def inpipe():',
      '    b = array.array("i", [0]); fcntl.ioctl(fd, termios.FIONREAD, b); return b[0]',
      'time.sleep(0.5)',
      'got = b""',
      'for _ in range(3): got += os.read(fd, 1)',
      'time.sleep(0.5)',
      'print("after taking 3:", inpipe(), flush=True)',
      'os.write(w, got)',
      'time.sleep(0.5)',
      'print("after giving back:", inpipe(), flush=True)',
    ].join('\n'),
  )
  const r = await run(node, [JOBCLIENT, 'fifo', '-k', '3', '--stats', stats, '--', 'python3', script], {
    env: { ...process.env, MAKEFLAGS: `--jobserver-auth=fifo:${p.path}` },
  })
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /after taking 3: 1\n/, 'refilled from a pool of 4: 3 with the child, 1 in the pipe')
  t.match(r.stdout, /after giving back: 3\n/, 'trimmed back to K = 3')
  const st = JSON.parse(fs.readFileSync(stats, 'utf8'))
  t.equal(st.acquired, st.returned, 'stats: every token acquired was returned')
  t.equal(st.maxHeld, 4, 'held the whole pool while the child had 3')
  t.equal(p.count(), 4, 'every token is back in the pool')
})
