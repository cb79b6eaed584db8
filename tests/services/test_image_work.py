"""Photo work in child processes: the same photos as in process, lower CPU priority, a dead child replaced, and
no child outliving its worker, however the worker ends."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from taxi.errors import ValidationFailed
from taxi.services.image_child import NICENESS
from taxi.services.image_work import ImageWork
from taxi.services.images import clean_image

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 16_000_000
ROOT = Path(__file__).resolve().parents[2]


def photo(size: tuple[int, int] = (3000, 2000)) -> bytes:
    noise = Image.effect_noise(size, 40)
    out = io.BytesIO()
    Image.merge("RGB", (noise, noise.rotate(180), noise)).save(out, "JPEG", quality=90)
    return out.getvalue()


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0: it has ended all the same.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not running(pid):
            return True
        time.sleep(0.02)
    return not running(pid)


async def test_a_photo_is_cleaned_in_a_child_at_lower_priority_exactly_as_in_process():
    work = ImageWork(processes=1)
    body = photo()
    try:
        clean = await work.clean(body, MAX_BYTES, MAX_PIXELS)
        [child] = work.pids
        assert child != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, child) == os.getpriority(os.PRIO_PROCESS, 0) + NICENESS
        assert clean == clean_image(body, MAX_BYTES, MAX_PIXELS)
        again = await work.clean(body, MAX_BYTES, MAX_PIXELS)
        assert again == clean and work.pids == [child]  # the child serves one job after another
    finally:
        await work.shutdown()
    assert not Path(f"/proc/{child}").exists(), "the stopped photo process was left a zombie"


async def test_a_refused_upload_is_a_field_error_and_the_child_keeps_serving():
    work = ImageWork(processes=1)
    try:
        with pytest.raises(ValidationFailed) as refused:
            await work.clean(b"GIF89a not really", MAX_BYTES, MAX_PIXELS)
        assert list(refused.value.errors) == ["photo"]
        with pytest.raises(ValidationFailed) as too_big:
            await work.clean(photo((2000, 1000)), MAX_BYTES, 1_000_000)
        assert "too large" in too_big.value.errors["photo"][0]
        [child] = work.pids
        assert (await work.clean(photo((800, 600)), MAX_BYTES, MAX_PIXELS)).extension == "jpg"
        assert work.pids == [child]
    finally:
        await work.shutdown()


async def test_overlapping_uploads_start_a_child_each_up_to_the_limit():
    work = ImageWork(processes=2)
    body = photo()
    try:
        results = await asyncio.gather(*(work.clean(body, MAX_BYTES, MAX_PIXELS) for _ in range(6)))
        assert len({r.photo for r in results}) == 1
        assert len(work.pids) == 2
    finally:
        await work.shutdown()


async def test_a_child_killed_under_a_job_is_replaced_and_the_job_still_answered():
    work = ImageWork(processes=1)
    body = photo((4000, 3000))
    try:
        await work.clean(body, MAX_BYTES, MAX_PIXELS)
        [first] = work.pids
        job = asyncio.create_task(work.clean(body, MAX_BYTES, MAX_PIXELS))
        await asyncio.sleep(0.01)  # the job is on its way to the child, or in it
        os.kill(first, signal.SIGKILL)
        assert (await job) == clean_image(body, MAX_BYTES, MAX_PIXELS)
        [second] = work.pids
        assert second != first
    finally:
        await work.shutdown()
    # Both reaped: a worker replacing children over its life must not fill the process table with zombies.
    assert not any(Path(f"/proc/{pid}").exists() for pid in (first, second))


async def test_an_upload_that_kills_two_children_is_refused_and_later_ones_are_served():
    dying = [sys.executable, "-c", "import sys; sys.stdin.buffer.read(4); sys.exit(139)"]
    work = ImageWork(processes=1, command=dying)
    with pytest.raises(ValidationFailed) as refused:
        await work.clean(photo((800, 600)), MAX_BYTES, MAX_PIXELS)
    assert list(refused.value.errors) == ["photo"]
    assert "valid image" in refused.value.errors["photo"][0]
    assert work.pids == []
    work.command = None  # a sane child again: the pool recovers
    try:
        assert (await work.clean(photo((800, 600)), MAX_BYTES, MAX_PIXELS)).extension == "jpg"
    finally:
        await work.shutdown()


WORKER = textwrap.dedent(
    """
    import asyncio, io, signal, sys, time
    from PIL import Image
    from taxi.services.image_work import ImageWork

    async def main():
        work = ImageWork(processes=1)
        out = io.BytesIO()
        Image.new("RGB", (640, 480)).save(out, "JPEG")
        await work.clean(out.getvalue(), 5 << 20, 16_000_000)
        print(work.pids[0], flush=True)
        await asyncio.sleep(60)

    # A worker stops on Ctrl-C, as Sanic's do, even when started by a shell that ignores SIGINT in the processes it
    # starts in the background (and so in this one, by inheritance: Python then installs no handler of its own).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    asyncio.run(main())
    """
)


@contextlib.contextmanager
def worker_with_child() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A process that used an ImageWork (its own session: a process group of its own), and its photo process;
    both gone afterwards, whatever the test did."""
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert worker.stdout is not None
    child = int(worker.stdout.readline())
    try:
        yield worker, child
    finally:
        worker.kill()
        worker.wait(5)
        worker.stdout.close()
        if running(child):
            os.kill(child, signal.SIGKILL)


def test_a_child_dies_with_its_worker_even_when_the_worker_is_killed():
    with worker_with_child() as (worker, child):
        assert running(child)
        worker.kill()
        worker.wait(5)
        assert gone_within(child, 3), "the photo process outlived its SIGKILLed worker"


def test_a_ctrl_c_to_the_process_group_is_left_to_the_worker():
    with worker_with_child() as (worker, child):
        os.kill(child, signal.SIGINT)  # what a terminal's Ctrl-C does to every process of the group
        time.sleep(0.3)
        assert running(child), "the photo process died of a SIGINT meant for its worker"
        os.killpg(worker.pid, signal.SIGINT)  # the worker (no handler here) dies of it; the child follows
        worker.wait(5)
        assert gone_within(child, 3)
