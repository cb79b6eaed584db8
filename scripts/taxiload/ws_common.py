"""What bench_ws's scenarios share: the run's context (Bench), a result row, CPU columns and latency percentiles."""

from __future__ import annotations

import argparse
from array import array
from dataclasses import dataclass, field
from typing import Any

from taxiload.accounts import Account
from taxiload.harness import ServerProcess
from taxiload.proc import cpu_percent, cpu_snapshot

SCENARIOS = ("broadcast", "lifecycle", "connections", "city")
# Hundreds of sign-ups and log-ins from one address, and sockets sending as fast as the server answers, are the
# point here, not an attack: these limits are lifted.
LIMITS = (
    "TAXI_SIGNUPS_PER_ADDRESS",
    "TAXI_LOGIN_ATTEMPTS_PER_ADDRESS",
    "TAXI_LOGIN_ATTEMPTS_PER_USER",
    "TAXI_WS_MESSAGES_PER_S",
)
LIMIT_HINT = f" (the server limits sign-ups or log-ins: bench_ws lifts {', '.join(LIMITS)}; has a new limit appeared?)"


class Bench:
    """One server under test: its driver accounts, the WebSocket URL, and CPU snapshots of this run's processes."""

    def __init__(self, server: ServerProcess, args: argparse.Namespace, drivers: list[Account], db_name: str) -> None:
        self.server, self.args, self.drivers, self.db_name = server, args, drivers, db_name
        self.ws = f"ws://127.0.0.1:{server.port}/taxi/"
        self.profile: str | None = None

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def snapshot(self) -> dict[str, float]:
        return cpu_snapshot(self.pid, self.db_name)

    def driver_urls(self, count: int) -> list[str]:
        return [f"{self.ws}?token={self.drivers[i % len(self.drivers)].access}" for i in range(count)]

    def open_args(self, count: int, procs: int) -> list[dict[str, Any]]:
        """The ``open`` command for each client process: ``count`` driver sockets in all, split evenly."""
        concurrency = max(1, self.args.concurrency // procs)
        return [{"urls": urls, "concurrency": concurrency} for urls in split(self.driver_urls(count), procs)]


def split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


@dataclass
class Row:
    scenario: str
    workers: int
    size: int  # drivers, pairs or sockets
    figures: dict[str, Any]
    cpu: dict[str, float]
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def bound(self) -> str:
        if self.cpu.get("client_max_cpu", 0) >= 90:
            return "client"
        if self.cpu.get("server_cpu", 0) >= 80 * self.workers:
            return "server"
        return "box CPU" if self.cpu.get("idle_pct", 100) < 10 else "not CPU"


def cpu_columns(
    before: dict[str, float], after: dict[str, float], wall: float, client_cpu_s: list[float]
) -> dict[str, float]:
    cpu = cpu_percent(before, after, wall)
    client = [100 * s / max(wall, 1e-9) for s in client_cpu_s]
    cpu["client_cpu"] = sum(client)
    cpu["client_max_cpu"] = max(client, default=0.0)
    known = cpu["server_cpu"] + cpu["pg_cpu"] + cpu["redis_cpu"] + cpu["irq_cpu"] + sum(client)
    cpu["other_cpu"] = max(cpu["busy_cpu"] - known, 0.0)
    cpu["wall_s"] = wall
    return cpu


def percentile(sorted_values: Any, q: float) -> float:
    if not len(sorted_values):
        return float("nan")
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


def latency_ms(micros: array) -> dict[str, float]:
    """p50, p99 and max in ms of latencies in microseconds."""
    values = sorted(micros)
    return {
        "p50_ms": percentile(values, 0.50) / 1000,
        "p99_ms": percentile(values, 0.99) / 1000,
        "max_ms": (values[-1] / 1000) if values else float("nan"),
    }


def joined(results: list[dict[str, Any]], key: str) -> array:
    """The int64 arrays that client processes sent as bytes under ``key``, as one array."""
    out = array("q")
    for r in results:
        out.frombytes(r[key])
    return out
