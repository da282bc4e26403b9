"""3. Reclaim and reaction.

reclaim: a pool of 1 token; a holder takes it, a waiter parks (blocking read, or poll then a
         non-blocking read); we SIGKILL the holder and time until the waiter's read returns.
         steved gets the token back through the holder's pidfd. A plain FIFO and our C server
         keep no accounting: the token is lost (we check that with one trial each).
release: the same, but the holder writes its token back: the ordinary hand-off, as a baseline
         for reclaim and for the other servers. Our C server answers the parked reader before
         the writer; "c-server-write-first" is the same server answering the writer first (the
         order steved uses), to show what that order alone costs.
set-jobs: a pool of 1 token, held; a waiter parks; we raise the pool to 2 and time until the
         waiter's read returns: through steved's STEVED_IOC_SET ioctl (what stevectl sends),
         and end to end by running `stevectl --set-jobs 2` (includes starting Node).
"""

from common import BUILD, PIN, STEVECTL_BIN, CServer, Ctx, Fifo, Steved, environment, run_json, summary, write_json

H = str(BUILD / "handoff")


def run(ctx: Ctx) -> dict:
    trials = 50 if ctx.quick else 300
    rows = []
    counters = {}

    def add(kind, pinned, r):
        lat = r.pop("latency_us")
        r.update(kind=kind, pinned=pinned, **summary(lat))
        r["latency_us"] = lat
        rows.append(r)

    for pinned in (False, True):
        pre = PIN if pinned else []
        with Steved(ctx, 1, pinned, name="steved-reclaim") as s:
            for waiter in ("read", "poll"):
                add("steved", pinned, run_json(pre + [H, "reclaim", s.path, str(trials), waiter, "1000"]))
                add("steved", pinned, run_json(pre + [H, "release", s.path, str(trials), waiter]))
            counters["pinned" if pinned else "unpinned"] = s.status()["counters"]
        with CServer(ctx, 1, pinned, name="csrv-reclaim") as c:
            for waiter in ("read", "poll"):
                add("c-server", pinned, run_json(pre + [H, "release", c.path, str(trials), waiter]))
            add("c-server", pinned, run_json(pre + [H, "reclaim", c.path, "1", "read", "1000"]))
        # The C server answering the releaser before the waiter, as steved does today.
        with CServer(ctx, 1, pinned, name="csrv-wf", write_first=True) as c:
            add("c-server-write-first", pinned, run_json(pre + [H, "release", c.path, str(trials), "read"]))
        with Fifo(ctx, 1) as f:
            for waiter in ("read", "poll"):
                add("fifo", pinned, run_json(pre + [H, "release", f.path, str(trials), waiter]))
            add("fifo", pinned, run_json(pre + [H, "reclaim", f.path, "1", "read", "1000"]))
        ctx.say(f"reclaim: {'pinned' if pinned else 'unpinned'} done")

    setjobs = {}
    if STEVECTL_BIN.exists():
        with Steved(ctx, 1, False, name="steved-setjobs") as s:
            r = run_json([H, "setjobs", s.path, str(trials)])
            lat = r.pop("latency_us")
            setjobs["ioctl"] = {**r, **summary(lat), "latency_us": lat}
            n = 5 if ctx.quick else 20
            r = run_json([H, "setjobs", s.path, str(n), "node", str(STEVECTL_BIN), "--device", s.path, "--set-jobs", "2"], timeout=300)
            lat = r.pop("latency_us")
            setjobs["stevectl"] = {**r, **summary(lat), "latency_us": lat}
        setjobs["measured"] = True
    else:
        setjobs = {"measured": False, "why": "packages/steved/bin/stevectl.js does not exist yet (control plane not built)"}
    ctx.say("reclaim: set-jobs done")

    data = {
        "what": "microseconds from SIGKILL of the holder (reclaim), from the holder's write (release), "
                "or from raising the pool (set-jobs) until a parked waiter's read returns the token",
        "environment": environment(),
        "trials": trials,
        "steved_counters": counters,
        "rows": rows,
        "set_jobs": setjobs,
    }
    write_json(ctx, "reclaim", data)
    return data
