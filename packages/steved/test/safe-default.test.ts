// Safe by default (steve's rule): without --mode the jobserver is root's plus the `jobserver`
// group's (0660) when that group exists, else root's alone (0600), and the start-up output says
// who may use it; --mode 0666 still opens it to everyone. A real steved on a FUSE file, opened
// by an unprivileged user through setpriv; needs root and /dev/fuse.

import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { defaultAccess, describeAccess } from '../src/access'
import { run, start } from '../../../test/helpers/proc'
import { STEVED_BIN, isMounted, requireFuseRoot, tmpDir } from '../../../test/helpers/steved'

const CTL = path.join(__dirname, '..', 'bin', 'stevectl.js')

/** steved started by hand, to read its start-up lines; SIGTERM at teardown, never a mount left. */
async function steved(t: Parameters<typeof tmpDir>[0], args: string[]): Promise<{ file: string; out: string }> {
  requireFuseRoot()
  const dir = tmpDir(t)
  fs.chmodSync(dir, 0o755) // mkdtemp makes it 0700: other users must reach the file
  const file = path.join(dir, 'jobserver')
  const d = start(t, process.execPath, [STEVED_BIN, '--transport', 'fuse', '--path', file, '-j', '1', ...args])
  t.teardown(async () => {
    if (d.child.exitCode === null && d.child.signalCode === null) {
      d.child.kill('SIGTERM')
      await d.exited
    }
    if (isMounted(file)) spawnSync('umount', ['-l', file])
  })
  const m = await d.waitFor(/^access: .*$/m)
  return { file, out: d.output().slice(0, m.index + m[0].length) }
}

/** Open the jobserver as user nobody in the given primary group; "ok" or the error code. */
async function openAs(gid: number, file: string): Promise<string> {
  const r = await run('setpriv', ['--reuid', '65534', '--regid', String(gid), '--clear-groups', process.execPath, CTL, '--device', file, '--get-jobs'], {
    timeoutMs: 20000,
    env: { PATH: process.env.PATH },
  })
  return r.code === 0 ? 'ok' : /EACCES|permission denied/i.test(r.stderr) ? 'EACCES' : `exit ${r.code}: ${r.stderr}`
}

const hasGroup = (g: string) => spawnSync('getent', ['group', g]).status === 0
const gidOf = (g: string) => Number(spawnSync('getent', ['group', g], { encoding: 'utf8' }).stdout.split(':')[2])

t.test('no jobserver group: 0600, root only, and the start-up output says so', async (t) => {
  if (hasGroup('jobserver')) {
    t.comment('this machine has a jobserver group: the 0600 case is checked through defaultAccess below only')
    t.same(defaultAccess(undefined, null, () => false), { mode: 0o600, group: null })
    return
  }
  const s = await steved(t, [])
  const st = fs.statSync(s.file)
  t.equal(st.mode & 0o777, 0o600, 'mode 0600')
  t.equal(st.gid, 0, "root's group")
  t.match(s.out, /^access: root only \(mode 0600\); for others, create group jobserver/m)
  t.equal(await openAs(100, s.file), 'EACCES', 'another user cannot open it')
})

t.test('a jobserver group: 0660 for it, and its members may use the pool', async (t) => {
  let gid: number
  if (!hasGroup('jobserver')) {
    // Created for this test and removed after it; a machine's own group is left alone.
    const r = spawnSync('groupadd', ['--system', 'jobserver'], { encoding: 'utf8' })
    t.equal(r.status, 0, `groupadd jobserver: ${r.stderr}`)
    t.teardown(() => spawnSync('groupdel', ['jobserver']))
  }
  gid = gidOf('jobserver')
  const s = await steved(t, [])
  const st = fs.statSync(s.file)
  t.equal(st.mode & 0o777, 0o660, 'mode 0660')
  t.equal(st.gid, gid, 'group jobserver')
  t.match(s.out, /^access: root and group jobserver \(mode 0660, group jobserver; add users with usermod -aG jobserver USER\)$/m)
  t.equal(await openAs(gid, s.file), 'ok', 'a member may open it')
  t.equal(await openAs(100, s.file), 'EACCES', 'a non-member may not')
})

t.test('--group G alone means 0660 for G; --mode 0666 still opens it to everyone', async (t) => {
  const g = await steved(t, ['--group', 'users'])
  t.equal(fs.statSync(g.file).mode & 0o777, 0o660)
  t.match(g.out, /^access: root and group users \(mode 0660, group users\)$/m)
  t.equal(await openAs(gidOf('users'), g.file), 'ok')

  const all = await steved(t, ['--mode', '0666'])
  t.equal(fs.statSync(all.file).mode & 0o777, 0o666)
  t.match(all.out, /^access: everyone \(mode 0666\)$/m)
  t.equal(await openAs(100, all.file), 'ok')
})

t.test('pure parts: the default and the words', async (t) => {
  t.same(defaultAccess(0o640, null, () => true), { mode: 0o640, group: null }, 'an explicit mode is kept')
  t.same(defaultAccess(undefined, 'wheel', () => false), { mode: 0o660, group: 'wheel' })
  t.same(defaultAccess(undefined, null, () => true), { mode: 0o660, group: 'jobserver' })
  t.same(defaultAccess(undefined, null, () => false), { mode: 0o600, group: null })
  t.match(describeAccess(0o600, null), /^access: root only \(mode 0600\)/)
  t.match(describeAccess(0o660, null), /^access: root and group root \(mode 0660, group root\)$/)
})
