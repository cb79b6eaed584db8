"""Prometheus metrics summed over every worker of one server: the counters, gauges and histogram, and the scrape.

Each worker writes its own values to memory-mapped files in one directory (prometheus-client's multiprocess
mode); a scrape, answered by whichever worker gets it, reads them all. A worker that dies keeps its counters
(its files stay); its gauges (open sockets, pool connections) are dropped at the next scrape, since a dead
process holds nothing. prometheus-client picks its storage when it is first imported, so this module imports
it only after ``use_directory`` has named the directory. Knows no Sanic.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from taxi.realtime.meter import frame_type

DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Client frame types counted by name; anything else is counted as "other" (a client must not be able to make
# up label values: every new one is a new time series).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)  # 20 ms: the stall a client may notice


def use_directory() -> tuple[Path, bool]:
    """The directory every process of this server shares; (path, True) when this call created it.

    The main process creates a fresh one and names it in the environment its workers inherit, so a worker (and a
    worker started later to replace one) finds it there. An operator may name their own with
    ``PROMETHEUS_MULTIPROC_DIR``; ``clear_directory`` then empties it at start-up.
    """
    given = os.environ.get(DIRECTORY_VARIABLE)
    if given:
        return Path(given), False
    path = Path(tempfile.mkdtemp(prefix="taxi-metrics-"))
    os.environ[DIRECTORY_VARIABLE] = str(path)
    return path, True


def clear_directory(path: Path) -> None:
    """Remove the values of an earlier run (a restarted server starts its counters from zero)."""
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def remove_directory(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@functools.cache
def _instruments() -> dict[str, Any]:
    """The metrics of this process, made once (prometheus-client refuses a second metric of the same name)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()  # ours, not the global one: the scrape reads the files, not a registry

    def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
        return Counter(name, doc, labels, registry=registry)

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
        return Gauge(name, doc, labels, registry=registry, multiprocess_mode="livesum")

    return {
        "requests": counter("taxi_http_requests", "HTTP requests answered", ("route", "method", "status")),
        "latency": Histogram(
            "taxi_http_request_duration_seconds",
            "Time from a request's arrival to its response",
            ("route",),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        "sockets": gauge("taxi_ws_open_sockets", "Open WebSocket connections", ("protocol",)),
        "frames": counter("taxi_ws_frames", "WebSocket frames read (in) and written (out)", ("direction", "type")),
        "published": counter("taxi_broadcasts_published", "Broadcasts sent to the broker"),
        "delivered": counter("taxi_broadcasts_delivered", "Broadcast frames handed to local sockets"),
        "publish_failures": counter("taxi_broadcast_publish_failures", "Broadcasts the broker refused"),
        "slow": counter("taxi_ws_slow_consumer_closes", "Sockets closed for falling too far behind (1013)"),
        "loop_lag": Histogram(
            "taxi_event_loop_lag_seconds",
            "How late a worker's event loop woke a task that asked to wake (sampled every 10 ms)",
            buckets=_LAG_BUCKETS,
            registry=registry,
        ),
        "loop_blocked": Histogram(
            "taxi_event_loop_blocked_seconds",
            "The part of each lag sample the loop was not waiting for a CPU core: its own work, or a lock (Linux)",
            buckets=_LAG_BUCKETS,
            registry=registry,
        ),
        "pool": gauge("taxi_db_pool_connections", "Database pool connections in use, and tasks waiting", ("state",)),
        "reconnects": counter("taxi_broker_reconnects", "Times the Redis pub/sub connection came back"),
    }


class PrometheusMeter:
    """The realtime ``Meter`` and the HTTP and pool measurements, written to this process's metric files."""

    def __init__(self, frame_types: frozenset[str]) -> None:
        metrics = _instruments()
        self._metrics = metrics
        self._known_in = frame_types
        self._frames_out: dict[str, Any] = {}
        self._frames_in: dict[str, Any] = {}
        self._published = metrics["published"]
        self._delivered = metrics["delivered"]
        self._loop_lag = metrics["loop_lag"]
        self._loop_blocked = metrics["loop_blocked"]
        self._pool_in_use = metrics["pool"].labels("in_use")
        self._pool_waiting = metrics["pool"].labels("waiting")

    # HTTP
    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._metrics["requests"].labels(route, method, str(status)).inc()
        self._metrics["latency"].labels(route).observe(seconds)

    def loop_lag(self, seconds: float, blocked: float) -> None:
        self._loop_lag.observe(seconds)
        self._loop_blocked.observe(blocked)

    def pool(self, in_use: int, waiting: int) -> None:
        self._pool_in_use.set(in_use)
        self._pool_waiting.set(waiting)

    # realtime.Meter
    def socket_opened(self, version: int) -> None:
        self._metrics["sockets"].labels(str(version)).inc()

    def socket_closed(self, version: int) -> None:
        self._metrics["sockets"].labels(str(version)).dec()

    def frame_in(self, kind: str) -> None:
        kind = kind if kind in self._known_in else "other"
        child = self._frames_in.get(kind)
        if child is None:
            child = self._frames_in[kind] = self._metrics["frames"].labels("in", kind)
        child.inc()

    def frame_out(self, text: str) -> None:
        kind = frame_type(text)
        child = self._frames_out.get(kind)
        if child is None:
            child = self._frames_out[kind] = self._metrics["frames"].labels("out", kind)
        child.inc()

    def published(self) -> None:
        self._published.inc()

    def publish_failed(self) -> None:
        self._metrics["publish_failures"].inc()

    def delivered(self, count: int) -> None:
        if count:
            self._delivered.inc(count)

    def slow_consumer(self) -> None:
        self._metrics["slow"].inc()

    def broker_reconnected(self) -> None:
        self._metrics["reconnects"].inc()


def scrape(path: Path) -> bytes:
    """Every process's values, summed, in the Prometheus text format. Blocking file I/O: run it in a thread."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    _forget_dead(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))
    return bytes(generate_latest(registry))


def _forget_dead(path: Path) -> None:
    """Drop the gauges of processes that no longer run (a killed worker never said goodbye)."""
    from prometheus_client import multiprocess

    pids = {name.stem.rsplit("_", 1)[-1] for name in path.glob("gauge_live*_*.db")}
    for pid in pids:
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), str(path))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
