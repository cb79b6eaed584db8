"""bench_ws's connections scenario: thousands of idle driver sockets opened as fast as the concurrency allows; new
sockets/s, open latency, the server's memory per socket, and whether a broadcast still reaches them all."""

from __future__ import annotations

import time
from typing import Any

import uvloop

from taxiload.accounts import make_accounts
from taxiload.proc import cpu_seconds, descendants, memory_kib, tcp_counters
from taxiload.ws_agents import broadcast_riders
from taxiload.ws_common import LIMIT_HINT, Bench, Row, cpu_columns, joined, latency_ms
from taxiload.ws_pool import Clients

TCP = ("ListenOverflows", "TCPSynRetrans")


def run(bench: Bench) -> Row:
    args, n = bench.args, bench.args.sockets
    procs = max(1, min(args.client_procs, n))
    with Clients(procs) as clients:
        m = _open(bench, clients, procs, n)
        print(f"    {m['sockets']} idle driver sockets open in {m['span']:.1f} s; holding them {args.hold} s")
        time.sleep(args.hold)
        m["mem1"] = memory_kib(descendants(bench.pid))
        clients.call("reset")
        rider = make_accounts(bench.server.url, "rider", 1, "Bench", LIMIT_HINT)
        sent = uvloop.run(broadcast_riders(bench.ws, rider, 0, 0, once=True))
        got = clients.call("collect", [{"expected": sent["created"], "quiet": 3.0, "max_wait": 30.0}] * procs)
        closing = clients.call("close")
        time.sleep(3.0)
        m["mem2"] = memory_kib(descendants(bench.pid))
    burst = joined(got, "latency_us")
    still_open = sum(r["sockets"] - r["closed"] for r in got)
    reached = 100 * len(burst) / max(still_open, 1) if sent["created"] else 0.0
    problems = m["problems"]
    if m["sockets"] < n:
        problems.append(f"only {m['sockets']} of {n} sockets opened")
    if still_open < m["sockets"]:
        problems.append(f"{m['sockets'] - still_open} idle sockets were closed by the server while held")
    if reached < 99:
        problems.append(f"the broadcast after opening reached only {reached:.2f}% of the open driver sockets")
    if aborted := sum(r["aborted"] for r in closing):
        problems.append(f"{aborted} sockets did not finish the close handshake within 10 s")
    figures = _figures(m) | {"broadcast_reached_pct": reached, "broadcast_last_ms": latency_ms(burst)["max_ms"]}
    return Row("connections", bench.server.workers, n, figures, m["cpu"], problems)


def _open(bench: Bench, clients: Clients, procs: int, n: int) -> dict[str, Any]:
    """Warm up, take the memory baseline, then open ``n`` sockets; what was measured while opening."""
    # Warm up first (pool connections, caches, first-use allocations), so that the memory baseline below is a
    # running server's and the difference is the sockets' own.
    warm = max(1, min(200, n // 10))
    clients.call("open", [args | {"concurrency": warm} for args in bench.open_args(warm, procs)])
    clients.call("close")
    time.sleep(2.0)
    mem0 = memory_kib(descendants(bench.pid))
    tcp0 = tcp_counters(*TCP)
    before, cpu0, t0 = bench.snapshot(), cpu_seconds(), time.monotonic()
    opened = clients.call("open", bench.open_args(n, procs), timeout=max(300.0, n / 10))
    after, wall = bench.snapshot(), time.monotonic() - t0
    tcp1 = tcp_counters(*TCP)
    client_cpu = [cpu_seconds() - cpu0] + [r["cpu_s"] for r in opened]
    return {
        "mem0": mem0,
        "tcp": {name: tcp1[name] - tcp0[name] for name in TCP},
        "cpu": cpu_columns(before, after, wall, client_cpu),
        "sockets": sum(r["opened"] for r in opened),
        "span": (max(r["last_ns"] for r in opened) - min(r["first_ns"] for r in opened)) / 1e9,
        "open_us": joined(opened, "open_us"),
        "problems": [f"{k} x {v}" for r in opened for k, v in r["failures"].items()],
    }


def _figures(m: dict[str, Any]) -> dict[str, Any]:
    mem0, mem1, mem2, sockets = m["mem0"], m["mem1"], m["mem2"], m["sockets"]

    def per(key: str) -> float | None:
        now, then = mem1[key], mem0[key]
        return None if now is None or then is None else (now - then) / max(sockets, 1)

    opening = latency_ms(m["open_us"])
    return {
        "sockets": sockets,
        "sockets_per_s": sockets / max(m["span"], 1e-9),
        "open_p50_ms": opening["p50_ms"],
        "open_p99_ms": opening["p99_ms"],
        "rss_kib_per_socket": per("rss"),
        "pss_kib_per_socket": per("pss"),
        "rss_before_kib": mem0["rss"],
        "rss_open_kib": mem1["rss"],
        "rss_closed_kib": mem2["rss"],
        "fds_before": mem0["fds"],
        "fds_open": mem1["fds"],
        "fds_closed": mem2["fds"],
        "listen_overflows": m["tcp"]["ListenOverflows"],
        "syn_retransmits": m["tcp"]["TCPSynRetrans"],
    }
