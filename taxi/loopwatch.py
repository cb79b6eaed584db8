"""A worker's event loop, watched: how late it wakes up, and a garbage collector tuned not to stop it for seconds.

**Lag.** A task asks to wake every ``INTERVAL_S``; how much later than asked it wakes is the loop's lag: the time a
ready socket, timer or reply waits before this worker gets to it (blocking code, a long callback, a collection).
Each sample goes to the meter (the ``taxi_event_loop_lag_seconds`` histogram of ``/metrics``); the worst of each
minute is logged when it passes ``WARN_S``, so a stall shows in the log even with metrics off.

**Blocked, or waiting for a core.** Lag has two causes that call for different remedies: the worker's own code held
the loop (or a lock the loop needed, such as the GIL), or the machine had no free core for the loop thread. On Linux
the kernel counts, per thread, the time it spent ready to run but not running (``/proc/thread-self/schedstat``);
what a sample's lag exceeds that wait by is the loop's own blocking (``taxi_event_loop_blocked_seconds``; on other
systems it is the whole lag).

**The collector.** CPython's cyclic collector runs a young collection after every 700 net allocations of tracked
objects, and promotes what survives two of them; with thousands of sockets, objects that live a few milliseconds
(a message being handled, a query in flight) reach the oldest generation by the hundred thousand, and every so
often a full collection walks every object of every socket: with 5,000 sockets a worker stopped for up to a second
at a time (``scripts/bench_ws --scenario city``). So a worker, once started, freezes what it has built (modules,
the app: never garbage) and collects young objects every ``YOUNG_THRESHOLD`` allocations instead, so that
short-lived objects are freed before they are promoted; the older generations keep their defaults.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("taxi.loop")

INTERVAL_S = 0.01  # a sample every 10 ms: any stall longer than that is seen
WARN_S = 0.1  # the worst lag of a minute is logged from this on
REPORT_EVERY_S = 60.0
YOUNG_THRESHOLD = 20_000  # CPython's default is 700; a young collection of this many takes about 10 ms
OLDER_THRESHOLDS = (20, 100)  # collections of the generation below between two of this one (defaults: 10, 10)


def tune_collector() -> None:
    """In a worker that has finished starting: freeze what exists, and collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


class RunQueueWait:
    """Seconds the calling thread has spent ready to run without a core, from Linux's per-thread scheduler
    statistics; always 0 where there are none. Open it on the thread to be measured."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def __call__(self) -> float:
        if self._fd is None:
            return 0.0
        try:  # "<ns on a core> <ns waiting for one> <timeslices>"
            return int(os.pread(self._fd, 64, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LoopWatch:
    """Measures this worker's event loop lag, from ``start`` (on the loop) until ``stop``: ``observe(lag, blocked)``
    per sample, seconds, where ``blocked`` is the part of the lag not spent waiting for a core."""

    def __init__(self, observe: Callable[[float, float], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._observe = observe
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.worst = 0.0  # the worst lag since the last report

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(RunQueueWait()), name="loop-watch")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _watch(self, waited: RunQueueWait) -> None:
        try:
            await self._sample(waited)
        finally:
            waited.close()

    async def _sample(self, waited: RunQueueWait) -> None:
        clock = self._clock
        report_at = clock() + REPORT_EVERY_S
        waited_at = waited()  # each reading ends one sample's window and starts the next
        while True:
            asked = clock() + INTERVAL_S
            await asyncio.sleep(INTERVAL_S)
            now = clock()
            lag = max(0.0, now - asked)
            waited_now = waited()
            self._observe(lag, max(0.0, lag - (waited_now - waited_at)))
            waited_at = waited_now
            if lag > self.worst:
                self.worst = lag
            if now >= report_at:
                if self.worst >= WARN_S:
                    log.warning(
                        "event loop lag: up to %.0f ms in the last %.0f s (gc: %s)",
                        self.worst * 1000,
                        REPORT_EVERY_S,
                        gc.get_stats()[-1],
                    )
                self.worst = 0.0
                report_at = now + REPORT_EVERY_S
