"""bench_ws's broadcast scenario: driver sockets in the client processes hear every trip that a few riders create
at a fixed rate; deliveries/s, send-to-receipt latency, and whether every socket got every trip."""

from __future__ import annotations

import collections
import time
from typing import Any

import uvloop

from taxiload.accounts import make_accounts
from taxiload.proc import cpu_seconds
from taxiload.profiler import start_profile
from taxiload.ws_agents import broadcast_riders
from taxiload.ws_common import LIMIT_HINT, Bench, Row, cpu_columns, joined, latency_ms
from taxiload.ws_pool import Clients


def run(bench: Bench) -> Row:
    args, n = bench.args, bench.args.drivers
    riders = make_accounts(bench.server.url, "rider", args.riders, "Bench", LIMIT_HINT)
    procs = max(1, min(args.client_procs, n))
    with Clients(procs) as clients:
        opened = clients.call("open", bench.open_args(n, procs))
        sockets = sum(r["opened"] for r in opened)
        problems = [f"{k} x {v}" for r in opened for k, v in r["failures"].items()]
        print(f"    {sockets} driver sockets ready; {args.riders} riders at {args.rate} trips/s for {args.duration} s")
        clients.call("reset")
        spy = start_profile(bench.server, args.duration, "broadcast") if args.profile else None
        before, cpu0, t0 = bench.snapshot(), cpu_seconds(), time.monotonic()
        sent = uvloop.run(broadcast_riders(bench.ws, riders, args.duration, args.rate))
        wait = max(30.0, args.duration)
        got = clients.call("collect", [{"expected": sent["created"], "quiet": 3.0, "max_wait": wait}] * procs)
        after, wall = bench.snapshot(), time.monotonic() - t0
        client_cpu = [cpu_seconds() - cpu0] + [r["cpu_s"] for r in got]
        clients.call("close")
    if spy is not None:
        spy[0].wait(60)
        bench.profile = str(spy[1]) if spy[1].exists() else None
    figures = _figures(args.duration, args.rate, sockets, sent, got)
    problems += _problems(n, sockets, sent, got, figures)
    return Row("broadcast", bench.server.workers, n, figures, cpu_columns(before, after, wall, client_cpu), problems)


def _figures(
    duration: float, rate: float, sockets: int, sent: dict[str, Any], got: list[dict[str, Any]]
) -> dict[str, Any]:
    latency = joined(got, "latency_us")
    deliveries, expected = len(latency), sent["created"] * sockets
    last_ns = max((r["last_ns"] for r in got), default=0)
    span = max((last_ns - sent["first_ns"]) / 1e9, 1e-9) if last_ns else float("nan")
    return {
        "drivers": sockets,
        "trips_per_s": sent["created"] / duration,
        "target_trips_per_s": rate,
        "skipped": sent["skipped"],
        "deliveries": deliveries,
        "deliveries_per_s": deliveries / span if last_ns else 0.0,
        **latency_ms(latency),
        "delivered_pct": 100 * deliveries / expected if expected else 0.0,
        "echo_p99_ms": latency_ms(sent["echo_us"])["p99_ms"],
    }


def _problems(
    n: int, sockets: int, sent: dict[str, Any], got: list[dict[str, Any]], figures: dict[str, Any]
) -> list[str]:
    problems = []
    deliveries, expected = figures["deliveries"], sent["created"] * sockets
    if sockets < n:
        problems.append(f"only {sockets} of {n} driver sockets opened")
    if deliveries != expected:
        problems.append(
            f"delivered {figures['delivered_pct']:.3f}% ({deliveries} of {expected} = {sent['created']} trips x "
            f"{sockets} sockets); {sum(r['short'] for r in got)} sockets got fewer, {sum(r['extra'] for r in got)} more"
        )
    if closed := sum(r["closed"] for r in got):
        codes: collections.Counter[int | None] = collections.Counter()
        for r in got:
            codes.update(r["close_codes"])
        problems.append(f"{closed} driver sockets were closed by the server during the run (codes {dict(codes)})")
    errors = collections.Counter(sent["errors"])
    for r in got:
        errors.update(r["errors"])
    if errors:
        problems.append(f"error frames: {dict(errors)}")
    if sent["lost"]:
        problems.append(f"{sent['lost']} create.trip got no echo within 10 s")
    return problems
