"""bench_ws's lifecycle scenario: rider/driver pairs loop create -> STARTED -> IN_PROGRESS -> COMPLETED; lifecycles/s
and how long an update takes to reach the rider."""

from __future__ import annotations

import collections
import time
from typing import Any

from taxiload.accounts import make_accounts
from taxiload.proc import cpu_seconds
from taxiload.ws_common import LIMIT_HINT, Bench, Row, cpu_columns, joined, latency_ms, split
from taxiload.ws_pool import Clients


def run(bench: Bench, pairs: int) -> Row:
    args = bench.args
    riders = make_accounts(bench.server.url, "rider", pairs, "Bench", LIMIT_HINT)
    drivers = make_accounts(bench.server.url, "driver", pairs, "Bench", LIMIT_HINT)
    specs = [(i, r.id, r.access, d.id, d.access) for i, (r, d) in enumerate(zip(riders, drivers, strict=True))]
    procs = max(1, min(args.client_procs, pairs))
    with Clients(procs) as clients:
        opened = clients.call(
            "lc_open",
            [{"ws": bench.ws, "concurrency": args.concurrency, "pairs": part} for part in split(specs, procs)],
        )
        ready = sum(r["pairs"] for r in opened)
        problems = [f"{k} x {v}" for r in opened for k, v in r["failures"].items()]
        print(f"    {ready} rider/driver pairs ready; lifecycles for {args.duration} s")
        start_ns = time.time_ns() + 300_000_000
        deadline_ns = start_ns + int(args.duration * 1e9)
        clients.send("lc_run", [{"start_ns": start_ns, "deadline_ns": deadline_ns, "step_timeout": 10.0}] * procs)
        time.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
        before, cpu0, t0 = bench.snapshot(), cpu_seconds(), time.monotonic()
        time.sleep(max(0.0, (deadline_ns - time.time_ns()) / 1e9))
        after, wall, main_cpu = bench.snapshot(), time.monotonic() - t0, cpu_seconds() - cpu0
        got = clients.receive(timeout=60)
        clients.call("close")
    # The client processes' CPU also covers finishing the lifecycles in flight at the deadline (a few ms).
    client_cpu = [main_cpu] + [r["cpu_s"] for r in got]
    figures, more = _judge(args.duration, pairs, ready, got)
    cpu = cpu_columns(before, after, wall, client_cpu)
    return Row("lifecycle", bench.server.workers, pairs, figures, cpu, problems + more)


def _judge(duration: float, pairs: int, ready: int, got: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The figures of a lifecycle run and its problems."""
    errors: collections.Counter[str] = collections.Counter()
    for r in got:
        errors.update(r["errors"])
    stalls = sum(r["stalls"] for r in got)
    problems = []
    if ready < pairs:
        problems.append(f"only {ready} of {pairs} pairs connected")
    if errors:
        problems.append(f"error frames: {dict(errors)}")
    if stalls:
        problems.append(f"{stalls} lifecycles stalled (no COMPLETED within 10 s)")
    if closed := sum(r["closed"] for r in got):
        problems.append(f"{closed} sockets were closed by the server during the run")
    rider = latency_ms(joined(got, "rider_us"))
    figures = {
        "pairs": ready,
        "lifecycles_per_s": sum(r["in_window"] for r in got) / duration,
        "completed": sum(r["completed"] for r in got),
        "update_to_rider_p50_ms": rider["p50_ms"],
        "update_to_rider_p99_ms": rider["p99_ms"],
        "update_to_rider_max_ms": rider["max_ms"],
        "update_reply_p99_ms": latency_ms(joined(got, "reply_us"))["p99_ms"],
        "create_echo_p99_ms": latency_ms(joined(got, "echo_us"))["p99_ms"],
        "driver_frames_per_s": sum(r["driver_frames"] for r in got) / duration,
        "errors": sum(errors.values()),
        "stalls": stalls,
    }
    return figures, problems
