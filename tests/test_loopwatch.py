"""The event loop watch: a worker's stall shows as lag, and a worker's collector is tuned once it has started."""

import asyncio
import gc
import os
import subprocess
import sys
import time

import pytest

from taxi import loopwatch
from taxi.loopwatch import LoopWatch


async def test_a_callback_that_blocks_the_loop_shows_as_lag_and_as_blocked_and_an_idle_loop_does_not():
    samples: list[tuple[float, float]] = []
    watch = LoopWatch(lambda lag, blocked: samples.append((lag, blocked)))
    watch.start()
    try:
        await asyncio.sleep(0.2)
        idle = list(samples)
        time.sleep(0.08)  # the loop is blocked: nothing on it runs meanwhile
        await asyncio.sleep(0.05)
    finally:
        watch.stop()
    assert len(idle) >= 5, idle
    assert max(lag for lag, _ in idle) < 0.05, idle
    stalled = samples[len(idle) :]
    assert max(lag for lag, _ in stalled) >= 0.06, stalled
    assert max(blocked for _, blocked in stalled) >= 0.06, stalled  # blocked by its own code, not by the machine
    assert watch.worst >= 0.06


SPIN = "import time\nend = time.monotonic() + 3\nwhile time.monotonic() < end: pass"


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="Linux scheduler statistics")
async def test_a_loop_that_waits_for_a_core_lags_without_being_blocked():
    core = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})  # this thread and its spinning neighbours share one core
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(3)]
    samples: list[tuple[float, float]] = []
    watch = LoopWatch(lambda lag, blocked: samples.append((lag, blocked)))
    try:
        await asyncio.sleep(0.3)  # the spinners start and take the core
        watch.start()
        await asyncio.sleep(1.0)
    finally:
        watch.stop()
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
        os.sched_setaffinity(0, before)
    late = [(lag, blocked) for lag, blocked in samples if lag > 0.002]  # timer resolution aside
    assert len(late) >= 10, samples  # busy processes on its core: the loop wakes late, again and again
    lag = sum(lag for lag, _ in late)
    blocked = sum(blocked for _, blocked in late)
    assert blocked < lag / 4, (lag, blocked, late)


def test_a_started_worker_collects_young_objects_less_often_and_never_walks_what_it_built():
    before = gc.get_threshold()
    try:
        loopwatch.tune_collector()
        assert gc.get_threshold() == (loopwatch.YOUNG_THRESHOLD, *loopwatch.OLDER_THRESHOLDS)
        assert gc.get_freeze_count() > 1000  # the modules and objects made so far
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
