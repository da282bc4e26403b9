"""A cargo-like jobserver client for the scheduling benchmark: blocking reads.

    blocking_client.py JOB LOG BUILD PARALLEL SPECFILE

SPECFILE has one job per line: "NAME sleep|cpu MS". Each job runs as a real process
(`JOB LOG BUILD:NAME KIND MS`, which records its start and end).

With a jobserver in MAKEFLAGS (--jobserver-auth=fifo:PATH) it behaves like cargo with
jobserver-rs (>= 0.1.32, which opens the path twice: one file for reads, one for writes): one job runs in the implicit slot; a helper thread does blocking 1-byte reads
for one more token at a time while jobs are still waiting; a finishing job hands its token
to the next waiting job, and a token nobody needs goes straight back. When all jobs are
done the process exits, which ends a helper read still parked (cargo interrupts its helper
thread with a signal instead; the effect on the pool is the same).

Without a jobserver it runs PARALLEL jobs at a time (cargo -jN).
"""

import collections
import os
import re
import subprocess
import sys
import threading


def main() -> None:
    job_bin, log, build, parallel, spec = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    jobs = collections.deque(line.split() for line in open(spec) if line.strip())
    total = len(jobs)
    lock = threading.Lock()
    done = threading.Event()
    finished = [0]

    def run(job):
        name, kind, ms = job
        subprocess.run([job_bin, log, f"{build}:{name}", kind, ms], check=True)
        with lock:
            finished[0] += 1

    m = re.search(r"--jobserver-auth=fifo:(\S+)", os.environ.get("MAKEFLAGS", ""))
    if not m:
        def worker():
            while True:
                with lock:
                    if not jobs:
                        return
                    job = jobs.popleft()
                run(job)

        threads = [threading.Thread(target=worker) for _ in range(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return

    # Two opens, one for reads and one for writes, as jobserver-rs >= 0.1.32 does. With a single
    # open file a release from a job thread would wait behind the helper's parked read on a
    # FUSE regular file (bench/c/samefd.c).
    rfd = os.open(m.group(1), os.O_RDWR)
    wfd = os.open(m.group(1), os.O_RDWR)

    chains = [0]

    def start_chain(job, token):
        with lock:
            chains[0] += 1
        threading.Thread(target=chain, args=(job, token), daemon=True).start()

    def chain(job, token):
        # Run jobs with this slot until none waits, then give the token back; the last chain
        # to end, after the last job, lets the process exit (never before a token is back).
        while job is not None:
            run(job)
            with lock:
                job = jobs.popleft() if jobs else None
        if token is not None:
            os.write(wfd, token)
        with lock:
            chains[0] -= 1
            if chains[0] == 0 and finished[0] == total:
                done.set()

    with lock:
        first = jobs.popleft()
    start_chain(first, None)

    def helper():
        while True:
            with lock:
                if not jobs:
                    return
            token = os.read(rfd, 1)  # blocking, like jobserver-rs' helper thread
            if len(token) != 1:
                raise SystemExit(f"{build}: the jobserver returned {token!r}")
            with lock:
                job = jobs.popleft() if jobs else None
            if job is None:
                os.write(wfd, token)
                return
            start_chain(job, token)

    threading.Thread(target=helper, daemon=True).start()
    done.wait()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
