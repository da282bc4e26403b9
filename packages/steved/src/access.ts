// Who may use the jobserver when nothing says: steve's rule. Root and the `jobserver` group
// (0660) where that group exists, else root alone (0600); anything wider only on request
// (--mode 0666). Anyone who can open the pool can take every token and stall every build.

import { groupExists } from './io/accounts'

/** The group steve's packaging (acct-group/jobserver) creates for users of the pool. */
export const JOBSERVER_GROUP = 'jobserver'

/**
 * The mode and group to serve with. An explicit --mode is used as given; without one, a
 * given --group gets 0660, else the jobserver group when it exists, else root only.
 */
export function defaultAccess(mode: number | undefined, group: string | null, exists: (g: string) => boolean = groupExists): { mode: number; group: string | null } {
  if (mode !== undefined) return { mode, group }
  if (group !== null) return { mode: 0o660, group }
  if (exists(JOBSERVER_GROUP)) return { mode: 0o660, group: JOBSERVER_GROUP }
  return { mode: 0o600, group: null }
}

/** The start-up line that says who may use the pool. */
export function describeAccess(mode: number, group: string | null): string {
  const m = `mode 0${mode.toString(8).padStart(3, '0')}`
  const g = group ?? 'root'
  if ((mode & 0o006) === 0o006) return `access: everyone (${m})`
  if ((mode & 0o060) === 0o060) {
    return `access: root and group ${g} (${m}, group ${g}${group === JOBSERVER_GROUP ? '; add users with usermod -aG jobserver USER' : ''})`
  }
  return `access: root only (${m}); for others, create group ${JOBSERVER_GROUP} (groupadd ${JOBSERVER_GROUP}; usermod -aG ${JOBSERVER_GROUP} USER) and restart, or pass --mode 0666`
}
