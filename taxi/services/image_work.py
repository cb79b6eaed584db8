"""Photo decoding and encoding in child processes of the worker, at a lower CPU priority than any event loop.

Why not a thread of the worker: Pillow gives the GIL back only inside its C calls, so a thread decoding a 12 Mpx
JPEG and the worker's event loop took turns at the GIL, and on a busy machine the loop waited for it. A thread
also runs at the loop's own priority, so more than one per worker took the cores from the event loops; with one,
a worker holding most of the uploading connections (the kernel hands connections to workers unevenly) processed
photos one at a time while other cores idled.

A child process (``taxi.services.image_child``) shares no GIL with the loop, and runs ``nice``: whenever an event
loop has work, the kernel gives it the core first, and photos take what is left. So every worker may have as many
as the machine has cores; they are started when first needed, one more each time all are busy.

Children never outlive their worker: they ignore SIGINT (a Ctrl-C reaches the whole process group, and the worker
ends them itself by closing their stdin), and Linux kills them when the worker dies, even by SIGKILL. A child that
dies under a job (a crashing decoder, the out-of-memory killer) is replaced and the job tried once more in a new
one; an upload that kills a second child is refused as an invalid image, and the worker keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import IO

import taxi
from taxi.errors import ValidationFailed
from taxi.services.image_child import ANSWER, JOB
from taxi.services.images import INVALID_IMAGE, CleanImage

log = logging.getLogger("taxi.media")

_STOP_WAIT = 2.0  # seconds a child may take to finish its job and exit once its stdin is closed
PIPE_BYTES = 1 << 20  # Linux's default ceiling for an unprivileged process
_POLL_S = 0.02  # how often a stopping child is checked for having exited
_PACKAGE_ROOT = str(Path(taxi.__file__).resolve().parent.parent)


class ChildDied(Exception):
    """The photo process ended (or its pipe broke) before it answered."""


def child_command() -> list[str]:
    """How a worker starts a photo process."""
    return [sys.executable, "-m", "taxi.services.image_child", str(os.getpid())]


class _Child:
    """One photo process and its pipes; one job at a time."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        reader: tuple[asyncio.ReadTransport, asyncio.StreamReader],
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        self.out, self.reader = reader
        self.writer = writer

    @classmethod
    async def start(cls, command: list[str]) -> _Child:
        """Start one. ``subprocess.Popen``, not ``asyncio.create_subprocess_exec``: CPython starts a child with
        ``vfork`` (under a millisecond), where uvloop forks the whole worker, copying its page tables on the event
        loop: 10-14 ms for a 190 MB process on an idle machine, several times that on a busy one."""
        env = dict(os.environ)  # the package found by the child wherever the worker found it
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert process.stdin is not None and process.stdout is not None
        _widen(process.stdin)
        loop = asyncio.get_running_loop()
        try:
            reader = asyncio.StreamReader()
            out, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), process.stdout)
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), process.stdin
            )
        except BaseException:
            process.kill()
            process.wait()
            raise
        return cls(process, (out, reader), asyncio.StreamWriter(transport, protocol, None, loop))

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def run(self, body: bytes, max_bytes: int, max_pixels: int) -> CleanImage | dict[str, list[str]]:
        try:
            self.writer.write(JOB.pack(len(body), max_bytes, max_pixels))
            self.writer.write(body)
            await self.writer.drain()
            (size,) = ANSWER.unpack(await self.reader.readexactly(ANSWER.size))
            answer: CleanImage | dict[str, list[str]] = pickle.loads(await self.reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise ChildDied(repr(exc)) from None
        return answer

    async def stop(self) -> None:
        """Close its stdin (it exits after the job it has); kill it if it does not exit in time."""
        self.writer.close()
        if not await self._exited(_STOP_WAIT):
            self.kill()
            await self._exited(None)
        self.out.close()

    async def _exited(self, seconds: float | None) -> bool:
        """Wait for the process to end (and reap it), for at most ``seconds``: whether it ended."""
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while self.process.poll() is None:
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_S)
        return True

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


def _widen(pipe: IO[bytes]) -> None:
    """Give the pipe a buffer of PIPE_BYTES where Linux allows it (64 KB by default): a 4 MB upload then crosses
    it in a few wake-ups of the worker and the child instead of some sixty."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or over /proc/sys/fs/pipe-max-size
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


class ImageWork:
    """The worker's photo processes: at most ``processes`` (0: one per core), started as jobs overlap.
    ``command`` starts one (``child_command()`` when not given)."""

    def __init__(self, processes: int = 0, command: list[str] | None = None) -> None:
        self.processes = processes or os.cpu_count() or 1
        self.command = command
        self._idle: list[_Child] = []
        self._slots: asyncio.Semaphore | None = None  # made on the loop that first uses it
        self._all: set[_Child] = set()
        self._ending: set[asyncio.Task[None]] = set()  # children killed after a failure, being reaped

    async def clean(self, body: bytes, max_bytes: int, max_pixels: int) -> CleanImage:
        """``clean_image`` in a photo process: the re-encoded sizes, or ``ValidationFailed`` on ``photo``."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.processes)
        async with self._slots:
            for attempt in (1, 2):
                child = await self._take()
                try:
                    result = await child.run(body, max_bytes, max_pixels)
                except ChildDied as exc:
                    self._lost(child)
                    if attempt == 1:
                        log.warning("a photo process died during a job (%s); trying it again in a new one", exc)
                        continue
                    log.warning("a photo process died again on the same upload; refused as an invalid image")
                    raise ValidationFailed.field("photo", INVALID_IMAGE) from None
                except BaseException:  # cancelled mid-job: the pipe is out of step; this child is done for
                    self._lost(child)
                    raise
                self._idle.append(child)
                if isinstance(result, dict):
                    raise ValidationFailed(result)
                return result
        raise AssertionError("unreachable")

    async def _take(self) -> _Child:
        while self._idle:
            child = self._idle.pop()
            if child.alive:
                return child
            self._lost(child)
        child = await _Child.start(self.command or child_command())
        self._all.add(child)
        return child

    def _lost(self, child: _Child) -> None:
        """Kill a child whose pipe can no longer be trusted, and reap it in the background."""
        child.kill()
        self._all.discard(child)
        task = asyncio.get_running_loop().create_task(child.stop())
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    @property
    def pids(self) -> list[int]:
        """The photo processes running now."""
        return sorted(child.pid for child in self._all)

    async def shutdown(self) -> None:
        """End every photo process: a job under way finishes, then its process exits."""
        children, self._all, self._idle = list(self._all), set(), []
        await asyncio.gather(*(child.stop() for child in children), *self._ending, return_exceptions=True)
