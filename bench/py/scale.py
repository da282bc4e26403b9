"""4. Cost and scale: steved's memory and CPU idle and under load; round trips with 10, 100
and 1000 concurrent client processes.

CPU is utime+stime of the whole server process from /proc/PID/stat (all threads), memory is
VmRSS/VmHWM from /proc/PID/status. The scale runs give the pool as many tokens as there are
clients (nobody waits for a token: this prices the server with many open files, watched
processes and pidfds, not queueing), are unpinned, and are bounded: a fixed number of round
trips per client and at most 10 s. With 1000 processes on 2 CPUs every latency includes
waiting for a CPU; the FIFO row shows how much of it that is.
"""

import time

from common import BUILD, CServer, Ctx, Fifo, Steved, environment, run_json, write_json
import capped_waiters
import status_readers

RT = str(BUILD / "rtbench")


def run(ctx: Ctx) -> dict:
    idle_s = 2 if ctx.quick else 5
    load_s = 2 if ctx.quick else 4
    out = {"what": __doc__.strip(), "environment": environment()}

    # Idle and under load, steved against the C server.
    cost = {}
    for cls in (Steved, CServer):
        with cls(ctx, 8, False, name=f"{cls.kind}-cost") as s:
            time.sleep(1)
            mem_start = s.memory_kib()
            c0, t0 = s.cpu_seconds(), time.monotonic()
            time.sleep(idle_s)
            c1, t1 = s.cpu_seconds(), time.monotonic()
            r = run_json([RT, "rt", s.path, "8", "10000000", "100", str(load_s)])
            c2, t2 = s.cpu_seconds(), time.monotonic()
            mem_load = s.memory_kib()
            cost[s.kind] = {
                "idle": {"seconds": round(t1 - t0, 2), "cpu_percent_of_one_core": round(100 * (c1 - c0) / (t1 - t0), 2), "memory_kib": mem_start},
                "load": {
                    "what": "8 unpinned clients doing acquire+release as fast as they can",
                    "seconds": round(t2 - t1, 2),
                    "round_trips": r["ops"],
                    "round_trips_per_s": r["round_trips_per_s"],
                    "cpu_percent_of_one_core": round(100 * (c2 - c1) / (t2 - t1), 1),
                    "server_cpu_us_per_round_trip": round(1e6 * (c2 - c1) / max(1, r["ops"]), 2),
                    "memory_kib": mem_load,
                },
            }
    out["cost"] = cost
    ctx.say("scale: idle/load cost done")

    rows = []
    counts = (10, 100, 1000)
    total_ops = 5000 if ctx.quick else 20000
    for n in counts:
        iters = max(10, total_ops // n)
        for kind in ("fifo", "c-server", "steved"):
            srv = Fifo(ctx, n) if kind == "fifo" else CServer(ctx, n, False, name=f"csrv-{n}") if kind == "c-server" else Steved(ctx, n, False, name=f"steved-{n}")
            with srv:
                cpu0 = srv.cpu_seconds() if kind != "fifo" else None
                r = run_json([RT, "rt", srv.path, str(n), str(iters), "2", "10"], timeout=180)
                if kind != "fifo":
                    r["server_cpu_us_per_round_trip"] = round(1e6 * (srv.cpu_seconds() - cpu0) / max(1, r["ops"]), 2)
                    r["server_memory_kib_after"] = srv.memory_kib()
                if kind == "steved":
                    r["steved_counters"] = srv.status()["counters"]
            r.update(kind=kind, iterations_per_client=iters)
            rows.append(r)
        ctx.say(f"scale: {n} clients done")
    out["clients"] = rows
    out["status_readers"] = {"what": status_readers.WHAT, "rows": status_readers.run_status_readers(ctx)}
    out["capped_waiters"] = {"what": capped_waiters.WHAT, "rows": capped_waiters.run_capped_waiters(ctx)}
    out["early_returners"] = {"what": capped_waiters.EARLY_WHAT, "rows": capped_waiters.run_early_returners(ctx)}
    write_json(ctx, "scale", out)
    return out
