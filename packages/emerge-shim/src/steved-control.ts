// steved's control plane as the shim uses it: jobclient's ControlClient (the one copy of the
// protocol, docs/control.md), with the answers the shim acts on. Another jobserver (a FIFO,
// steve, guildmaster) answers ENOTTY, which is reported as "not steved".
import { ControlClient, GROUP_OP_JOIN, encodeGroup, isNotSteved, loadNative, type GroupRoot, type Native, type Status, type SystemError } from 'jobclient'

/** steved's status document (jobclient's Status). */
export type StevedStatus = Status


export function encodeGroupJoin(name: string, pid: GroupRoot, limit: number | null): Buffer {
  return encodeGroup({ op: GROUP_OP_JOIN, name, pid, limit })
}

/** Control requests on one open jobserver path. close() is idempotent. */
export class StevedControl {
  readonly #client: ControlClient

  /** Opens `path` read-only and non-blocking (the way stevectl does). Throws Node's fs errors. */
  constructor(readonly path: string, native: Native = loadNative()) {
    this.#client = new ControlClient(path, native)
  }

  /**
   * Put the process tree under `pid` into group `name` capped at `limit` tokens. `pid` is a pid
   * as steved sees it, or 'caller' (this process) or 'parent' (its parent), which steved
   * resolves itself: the only right names from inside another pid namespace (FEATURES=pid-sandbox).
   * Returns 0, or -errno: -ENOTTY (not steved), -ESRCH (no such process), -EPERM (another
   * user's process).
   */
  groupJoin(name: string, pid: GroupRoot, limit: number | null): number {
    try {
      this.#client.groupJoin(name, pid, limit)
      return 0
    } catch (e) {
      const errno = (e as SystemError).errno
      if (typeof errno === 'number') return errno
      throw e
    }
  }

  /** steved's status document, or null when this is not steved. Throws other system errors. */
  status(): StevedStatus | null {
    try {
      return this.#client.status()
    } catch (e) {
      if (isNotSteved(e)) return null
      throw e
    }
  }

  close(): void {
    this.#client.close()
  }
}
