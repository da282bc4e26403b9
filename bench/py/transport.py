"""1. Transport cost: acquire+release round trips, FIFO vs the C libfuse3 server vs steved.

Every server holds 8 tokens, so neither 1 nor 8 clients ever wait for a token: this prices one
round trip through the transport and the server. "pinned" runs the server and every client on
CPU 0 (taskset -c 0): the pure protocol cost. "unpinned" lets the scheduler place them, which
on this 2-vCPU virtual machine adds cross-CPU wake-ups to every FUSE round trip.
"""

import statistics
import subprocess

from common import BUILD, PIN, CServer, Ctx, Fifo, Steved, environment, run_json, write_json

KINDS = ("fifo", "c-server", "steved")
STATS = ("median_us", "p90_us", "p99_us", "p999_us", "mean_us", "round_trips_per_s")


def make_server(ctx, kind, pinned):
    if kind == "fifo":
        return Fifo(ctx, 8)
    if kind == "c-server":
        return CServer(ctx, 8, pinned)
    return Steved(ctx, 8, pinned)


def run(ctx: Ctx) -> dict:
    reps = 1 if ctx.quick else 3
    iters1, iters8 = (5000, 1000) if ctx.quick else (20000, 4000)
    configs = [("rt", 1), ("rt", 8), ("prt", 1), ("prt", 8)]
    raw = []
    for rep in range(reps):
        for pinned in (True, False):
            for kind in KINDS:
                with make_server(ctx, kind, pinned) as srv:
                    for mode, clients in configs:
                        iters = iters1 if clients == 1 else iters8
                        cmd = (PIN if pinned else []) + [str(BUILD / "rtbench"), mode, srv.path, str(clients), str(iters), "500", "15"]
                        r = run_json(cmd)
                        r.update(kind=kind, pinned=pinned, rep=rep)
                        raw.append(r)
                        if not r["ok"]:
                            raise RuntimeError(f"rtbench failed against {kind}: {r}")
            ctx.say(f"transport: rep {rep + 1}/{reps} {'pinned' if pinned else 'unpinned'} done")

    # The median over repetitions of each statistic.
    rows = []
    for pinned in (True, False):
        for mode, clients in configs:
            for kind in KINDS:
                runs = [r for r in raw if r["kind"] == kind and r["pinned"] == pinned and r["mode"] == mode and r["clients"] == clients]
                row = {"kind": kind, "pinned": pinned, "mode": mode, "clients": clients, "reps": len(runs)}
                for s in STATS:
                    row[s] = round(statistics.median(r[s] for r in runs), 3)
                rows.append(row)

    def find(kind, pinned, mode, clients):
        return next(r for r in rows if (r["kind"], r["pinned"], r["mode"], r["clients"]) == (kind, pinned, mode, clients))

    ratios = []
    for pinned in (True, False):
        for mode, clients in configs:
            f, c, s = (find(k, pinned, mode, clients) for k in KINDS)
            ratios.append({
                "pinned": pinned, "mode": mode, "clients": clients,
                "median_steved_over_c": round(s["median_us"] / c["median_us"], 2),
                "p99_steved_over_c": round(s["p99_us"] / c["p99_us"], 2),
                "rate_c_over_steved": round(c["round_trips_per_s"] / s["round_trips_per_s"], 2),
                "median_steved_over_fifo": round(s["median_us"] / f["median_us"], 1),
                "p99_steved_over_fifo": round(s["p99_us"] / f["p99_us"], 1),
                "rate_fifo_over_steved": round(f["round_trips_per_s"] / s["round_trips_per_s"], 1),
            })
    # One open file, two threads: a release while a read is parked (see bench/c/samefd.c).
    samefd = []
    for kind, mk in (("fifo", lambda: Fifo(ctx, 1, name="samefd-fifo")),
                     ("c-server", lambda: CServer(ctx, 1, name="samefd-csrv")),
                     ("c-server-stream", lambda: CServer(ctx, 1, name="samefd-csrv-stream", stream=True)),
                     ("steved", lambda: Steved(ctx, 1, name="samefd-steved"))):
        with mk() as srv:
            try:
                r = subprocess.run([str(BUILD / "samefd"), srv.path], capture_output=True, text=True, timeout=3)
                ok = r.returncode == 0
                samefd.append({"kind": kind, "release_returned": ok, "detail": (r.stdout.strip() if ok else r.stderr.strip())})
            except subprocess.TimeoutExpired:
                samefd.append({"kind": kind, "release_returned": False, "detail": "write() still blocked after 3 s (killed)"})
    ctx.say("transport: same-file release check done")

    data = {
        "what": "acquire+release round trips (rt: read 1 byte + write it back; prt: poll POLLIN first); "
                "pool of 8 tokens so nobody waits; latency per round trip in microseconds, "
                "round trips/s over all clients; median over repetitions",
        "environment": environment(),
        "repetitions": reps,
        "iterations_per_client": {"1": iters1, "8": iters8},
        "rows": rows,
        "ratios": ratios,
        "release_while_read_parked_on_same_open_file": samefd,
        "raw": raw,
    }
    write_json(ctx, "transport", data)
    return data
