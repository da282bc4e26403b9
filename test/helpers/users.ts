// Throw-away users and groups for the tests that must act as someone other than root (a user
// without rights, the admin group, Portage's `portage` under userpriv). Made with groupadd and
// useradd (no home, no login shell), removed at teardown, also when the test fails. Needs root.

import { spawnSync } from 'node:child_process'

import type { Teardown } from './common'

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}

export interface ThrowAwayUser {
  name: string
  uid: number
  gid: number
  /** setpriv's arguments to run `cmd` as this user, with its groups. */
  as(cmd: string, ...args: string[]): string[]
}

/** A group `name`, removed at teardown. */
export function throwAwayGroup(t: Teardown, name: string): { name: string; gid: number } {
  t.teardown(() => spawnSync('groupdel', [name], { stdio: 'ignore' }))
  sh('groupadd', [name])
  return { name, gid: Number(sh('getent', ['group', name]).split(':')[2]) }
}

/**
 * A user `name`, removed at teardown after `beforeRemove` (which ends the user's processes:
 * userdel refuses a user that still runs something). `group`: a primary group of the user's
 * own, made too and removed after it; `groups`: supplementary groups that exist.
 */
export function throwAwayUser(t: Teardown, name: string, o: { group?: boolean; groups?: string[]; beforeRemove?: () => unknown } = {}): ThrowAwayUser {
  t.teardown(async () => {
    await o.beforeRemove?.()
    spawnSync('userdel', [name], { stdio: 'ignore' })
    if (o.group) spawnSync('groupdel', [name], { stdio: 'ignore' })
  })
  if (o.group) sh('groupadd', [name])
  sh('useradd', ['-M', '-N', '-s', '/usr/sbin/nologin', ...(o.group ? ['-g', name] : []), ...(o.groups?.length ? ['-G', o.groups.join(',')] : []), name])
  const uid = Number(sh('id', ['-u', name]).trim())
  const gid = Number(sh('id', ['-g', name]).trim())
  return { name, uid, gid, as: (cmd, ...args) => ['--reuid', String(uid), '--regid', String(gid), '--init-groups', cmd, ...args] }
}
