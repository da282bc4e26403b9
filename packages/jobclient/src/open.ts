// Opening a jobserver: turn an auth into a pair of fds that are ours alone and non-blocking.
//
// Why our own open file descriptions: O_NONBLOCK is a property of the open file description,
// not of the fd. Setting it on an inherited pipe fd would change every other process that
// shares it (make's own manual says the read side "should not be changed"; make 4.x does it
// anyway). So:
//   - fifo:PATH  -> one open(PATH, O_RDWR|O_NONBLOCK|O_CLOEXEC), used for reads and writes.
//                   O_RDWR never blocks in open(2) on a FIFO and keeps a writer alive, so our
//                   reads can never see EOF because the last other writer went away;
//   - R,W pipe   -> reopen /proc/self/fd/R (O_RDONLY) and /proc/self/fd/W (O_WRONLY), both
//                   O_NONBLOCK, as jobserver-rs does on Linux: a fresh description of the same
//                   pipe. The inherited fds stay as they are.
// Node's fs.openSync runs open(2) on the calling thread (no worker) and adds O_CLOEXEC.
import * as fs from 'node:fs'
import { describeProblem, JobserverError, withProblemWords, type SystemError } from './errors'
import type { JobserverAuth } from './makeflags'

/** FUSE's statfs f_type (linux/magic.h FUSE_SUPER_MAGIC). */
const FUSE_SUPER_MAGIC = 0x65735546

/** The fds a client reads tokens from and writes them back to (equal for `fifo:`). */
export interface OpenedJobserver {
  readFd: number
  writeFd: number
  /** The path reads and writes go to, for error messages: the FIFO, or /proc/self/fd/R. */
  path: string
  /** A path a child process can open to reach the same jobserver (`fifo:` form). */
  childPath: string
}

/**
 * Open the jobserver named by `auth`. Throws a Node-shaped system error when open/stat fail,
 * ERR_JOBSERVER_NOT_FIFO for a path that cannot be a jobserver, ERR_JOBSERVER_BAD_FD for
 * `R,W` fds that are closed or are not a pipe.
 */
export function openJobserver(auth: JobserverAuth): OpenedJobserver {
  const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants
  if (auth.style === 'fifo') {
    try {
      return openNamed(auth.path)
    } catch (e) {
      throw withProblemWords(e, auth.path)
    }
  }
  checkPipeFd(auth.read, 'read')
  checkPipeFd(auth.write, 'write')
  const readPath = `/proc/self/fd/${auth.read}`
  const readFd = fs.openSync(readPath, O_RDONLY | O_NONBLOCK)
  let writeFd: number
  try {
    writeFd = fs.openSync(`/proc/self/fd/${auth.write}`, O_WRONLY | O_NONBLOCK)
  } catch (e) {
    fs.closeSync(readFd)
    throw e
  }
  return { readFd, writeFd, path: readPath, childPath: `/proc/${process.pid}/fd/${readFd}` }
}

/** A `fifo:` path: a FIFO, a character device (CUSE) or a file on FUSE (steved's own file). */
function openNamed(path: string): OpenedJobserver {
  const st = fs.statSync(path)
  // make, jobserver-rs and Portage accept any path; we only refuse what cannot work: a plain
  // file on a disk file system reads as EOF once drained (a busy spin for make).
  if (!st.isFIFO() && !st.isCharacterDevice()) {
    const onFuse = st.isFile() && fs.statfsSync(path).type === FUSE_SUPER_MAGIC
    if (!onFuse) throw new JobserverError('ERR_JOBSERVER_NOT_FIFO', describeProblem('not-a-jobserver', path))
  }
  const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
  return { readFd: fd, writeFd: fd, path, childPath: path }
}

function checkPipeFd(fd: number, end: string): void {
  let st: fs.Stats
  try {
    st = fs.fstatSync(fd)
  } catch (e) {
    throw new JobserverError(
      'ERR_JOBSERVER_BAD_FD',
      `jobserver ${end} fd ${fd} is not open (${(e as SystemError).code}); a make recipe needs '+' to pass its jobserver fds`,
      { cause: e },
    )
  }
  if (!st.isFIFO()) {
    throw new JobserverError(
      'ERR_JOBSERVER_BAD_FD',
      `jobserver ${end} fd ${fd} is not a pipe (a stale fd number from make?)`,
    )
  }
}

/** Close the fds of an opened jobserver; errors are ignored (there is nothing left to do). */
export function closeJobserver(opened: OpenedJobserver): void {
  for (const fd of new Set([opened.readFd, opened.writeFd])) {
    try {
      fs.closeSync(fd)
    } catch {
      // A failed close(2) leaves nothing to retry: the fd is gone either way on Linux.
    }
  }
}
