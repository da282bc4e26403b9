// Real cargo (rustup's, jobserver-rs: blocking reads from a helper thread, stopped with
// SIGUSR1) building a small offline workspace against steved's FUSE file.

import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import t from 'tap'

import { run, start } from './helpers/proc'
import { startSteved, tmpDir, waitForStatus } from './helpers/steved'

const CLIENT = path.join(__dirname, '..', 'packages', 'steved', 'test', 'clients', 'jsclient.py')

function findCargo(): string {
  for (const dir of (process.env.PATH ?? '').split(':').concat(path.join(os.homedir(), '.cargo', 'bin'))) {
    const c = path.join(dir, 'cargo')
    if (fs.existsSync(c)) return c
  }
  throw new Error('cargo not found (this test needs rustup cargo >= 1.60 on PATH or in ~/.cargo/bin)')
}

/** A workspace of `n` independent library crates and a binary that uses them all. */
function writeWorkspace(dir: string, n: number): void {
  const libs = Array.from({ length: n }, (_, i) => `lib${i}`)
  fs.writeFileSync(
    path.join(dir, 'Cargo.toml'),
    `[workspace]\nresolver = "2"\nmembers = [${libs.map((l) => `"${l}"`).join(', ')}, "app"]\n`,
  )
  for (const [i, l] of libs.entries()) {
    fs.mkdirSync(path.join(dir, l, 'src'), { recursive: true })
    fs.writeFileSync(path.join(dir, l, 'Cargo.toml'), `[package]\nname = "${l}"\nversion = "0.1.0"\nedition = "2021"\n`)
    // Enough generic code that each crate takes a moment to compile.
    fs.writeFileSync(
      path.join(dir, l, 'src', 'lib.rs'),
      `pub fn value() -> u64 { let v: Vec<u64> = (0..${100 + i}).map(|x| x * x).collect(); v.iter().sum() }\n` +
        Array.from({ length: 40 }, (_, k) => `pub fn f${k}<T: Clone + std::fmt::Debug>(t: T) -> String { format!("{:?}{}", t.clone(), ${k}) }\n`).join(''),
    )
  }
  fs.mkdirSync(path.join(dir, 'app', 'src'), { recursive: true })
  fs.writeFileSync(
    path.join(dir, 'app', 'Cargo.toml'),
    `[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n[dependencies]\n${libs.map((l) => `${l} = { path = "../${l}" }`).join('\n')}\n`,
  )
  fs.writeFileSync(path.join(dir, 'app', 'src', 'main.rs'), `fn main() { println!("{}", ${libs.map((l) => `${l}::value()`).join(' + ')}); }\n`)
}

const cargo = findCargo()

t.test('cargo builds a workspace taking tokens from steved, and returns them all', async (t) => {
  const dir = tmpDir(t)
  const s = await startSteved(t, { jobs: 3, dir })
  const ws = path.join(dir, 'ws')
  fs.mkdirSync(ws)
  writeWorkspace(ws, 6)
  const r = await run(cargo, ['build', '--offline', '--quiet'], {
    cwd: ws,
    env: { ...process.env, MAKEFLAGS: s.makeflags, CARGO_TARGET_DIR: path.join(dir, 'target') },
    timeoutMs: 300000,
  })
  t.equal(r.code, 0, `cargo build succeeded: ${r.stderr}`)
  t.notMatch(r.stderr, /failed to connect to jobserver/, 'cargo accepted the FUSE file as its jobserver')
  const rep = await waitForStatus(s, (x) => x.pool.free === 3, 'all tokens back')
  t.ok(rep.counters.granted >= 1, `cargo took ${rep.counters.granted} tokens from the pool`)
})

t.test("cargo's helper thread parked in a blocking read is stopped by SIGUSR1 (EINTR) at the end", async (t) => {
  // The only token is held elsewhere for the whole build, so cargo builds on its implicit
  // slot while its helper thread sits in read(). At the end cargo interrupts that read with
  // SIGUSR1; without FUSE_INTERRUPT handling the read would never return and cargo would hang.
  const dir = tmpDir(t)
  const s = await startSteved(t, { jobs: 1, dir })
  const holder = start(t, 'python3', [CLIENT, s.path, 'hold', '1'])
  await holder.waitFor(/^held 1/m)
  const ws = path.join(dir, 'ws')
  fs.mkdirSync(ws)
  writeWorkspace(ws, 3)
  const r = await run(cargo, ['build', '--offline', '--quiet'], {
    cwd: ws,
    env: { ...process.env, MAKEFLAGS: s.makeflags, CARGO_TARGET_DIR: path.join(dir, 'target') },
    timeoutMs: 300000,
  })
  t.equal(r.code, 0, `cargo build finished: ${r.stderr}`)
  const rep = await waitForStatus(s, (x) => x.waiters.length === 0, 'no waiter left behind')
  t.ok(rep.counters.interrupts >= 1, `steved answered ${rep.counters.interrupts} interrupt(s) with EINTR`)
  holder.child.kill('SIGKILL')
  await waitForStatus(s, (x) => x.pool.free === 1, 'the held token reclaimed')
})
