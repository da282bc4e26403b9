// Access (issue 10): with `--mode 0660 --group G` only root and members of G may open the
// jobserver; everyone else gets EACCES from the kernel (the mount uses default_permissions,
// so the kernel checks the mode and group steved reports). A member may take tokens but not
// change settings (the control plane's EPERM). The users and group are created for the test
// and removed in teardown.

import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { run } from '../../../test/helpers/proc'
import { throwAwayGroup, throwAwayUser, type ThrowAwayUser } from '../../../test/helpers/users'
import { startSteved, tmpDir, waitForStatus } from '../../../test/helpers/steved'

// Runs as the unprivileged user: open, read a token, return it; then try to change `jobs`
// with STEVED_IOC_SET (docs/control.md: u32 key, u32 flags, f64 value).
const CLIENT = `
import errno, fcntl, os, struct, sys
try:
    fd = os.open(sys.argv[1], os.O_RDWR)
except OSError as e:
    print("open", errno.errorcode[e.errno]); sys.exit(0)
print("open ok")
b = os.read(fd, 1); os.write(fd, b); print("token", b)
SET = (1 << 30) | (16 << 16) | (ord("j") << 8) | 0x02
try:
    fcntl.ioctl(fd, SET, struct.pack("<IId", 0, 0, 7.0)); print("set ok")
except OSError as e:
    print("set", errno.errorcode[e.errno])
`

t.test('--mode 0660 --group G: a user outside G cannot open the jobserver, a member can but cannot change settings', async (t) => {
  const tag = `stv${process.pid % 100000}`
  const group = throwAwayGroup(t, `${tag}g`).name
  const member = throwAwayUser(t, `${tag}m`, { groups: [group] })
  const outsider = throwAwayUser(t, `${tag}o`)

  const dir = tmpDir(t)
  fs.chmodSync(dir, 0o755) // only the file's own permissions may decide
  const s = await startSteved(t, { jobs: 2, dir, args: ['--mode', '0660', '--group', group] })
  const st = fs.statSync(s.path)
  t.equal(st.mode & 0o777, 0o660, 'the jobserver is 0660')
  t.equal(st.gid, Number(spawnSync('getent', ['group', group], { encoding: 'utf8' }).stdout.split(':')[2]), `owned by group ${group}`)

  const as = (user: ThrowAwayUser) => run('setpriv', user.as('/usr/bin/python3', '-c', CLIENT, s.path), { cwd: path.dirname(s.path), timeoutMs: 20000 })

  const out = await as(outsider)
  t.equal(out.code, 0, out.stderr)
  t.match(out.stdout, /^open EACCES$/m, `${outsider.name} (not in ${group}) is refused with EACCES`)

  const mem = await as(member)
  t.equal(mem.code, 0, mem.stderr)
  t.match(mem.stdout, /^open ok$/m, `${member.name} (in ${group}) opens it`)
  t.match(mem.stdout, /^token b'\+'$/m, 'and takes and returns a token')
  t.match(mem.stdout, /^set EPERM$/m, 'but may not change settings (not root, not the admin group)')

  const root = await run('python3', ['-c', CLIENT, s.path], { timeoutMs: 20000 })
  t.match(root.stdout, /^set ok$/m, 'root may')
  await waitForStatus(s, (r) => r.pool.jobs === 7 && r.pool.free === 7, 'jobs changed by root only')
})
