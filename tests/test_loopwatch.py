"""The event loop watch: a worker's stall shows as lag, and a worker's collector is tuned once it has started."""

import asyncio
import gc
import time

from taxi import loopwatch
from taxi.loopwatch import LoopWatch


async def test_a_callback_that_blocks_the_loop_shows_as_lag_and_an_idle_loop_does_not():
    samples: list[float] = []
    watch = LoopWatch(samples.append)
    watch.start()
    try:
        await asyncio.sleep(0.2)
        idle = list(samples)
        time.sleep(0.08)  # the loop is blocked: nothing on it runs meanwhile
        await asyncio.sleep(0.05)
    finally:
        watch.stop()
    assert len(idle) >= 5, idle
    assert max(idle) < 0.05, idle
    stalled = samples[len(idle) :]
    assert max(stalled) >= 0.06, stalled
    assert watch.worst >= 0.06


def test_a_started_worker_collects_young_objects_less_often_and_never_walks_what_it_built():
    before = gc.get_threshold()
    try:
        loopwatch.tune_collector()
        assert gc.get_threshold() == (loopwatch.YOUNG_THRESHOLD, *loopwatch.OLDER_THRESHOLDS)
        assert gc.get_freeze_count() > 1000  # the modules and objects made so far
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
