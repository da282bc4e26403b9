// Users and groups by name: /etc/group first, then NSS (getent, id), as the rest of the
// system would resolve them. Numbers are taken as they are.

import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'

import { StevedError } from '../errors'

/** A group's gid, or null when no group of that name exists. */
export function lookupGroup(name: string): number | null {
  if (/^\d+$/.test(name)) return Number(name)
  try {
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const f = line.split(':')
      if (f[0] === name) return Number(f[2])
    }
  } catch {
    /* ask NSS */
  }
  try {
    return Number(execFileSync('getent', ['group', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split(':')[2])
  } catch {
    return null
  }
}

/** Whether a group exists. */
export function groupExists(name: string): boolean {
  return lookupGroup(name) !== null
}

/** A group's gid; a usage error when there is none. */
export function groupId(name: string): number {
  const gid = lookupGroup(name)
  if (gid === null) throw new StevedError('ERR_STEVED_USAGE', `unknown group '${name}'`, 'create it (groupadd), or pass an existing group')
  return gid
}

/** A user's uid and primary gid (`id -u`, `id -g`); a usage error when there is none. */
export function userIds(name: string): { uid: number; gid: number } {
  const id = (flag: '-u' | '-g'): number => {
    if (/^\d+$/.test(name)) return Number(name)
    try {
      return Number(execFileSync('id', [flag, name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim())
    } catch {
      throw new StevedError('ERR_STEVED_USAGE', `unknown user '${name}'`, 'create it, or pass an existing user')
    }
  }
  return { uid: id('-u'), gid: id('-g') }
}
