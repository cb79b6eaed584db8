"""The photo process: ``python -m taxi.services.image_child <worker pid>``, started by ``taxi.services.image_work``.

It reads jobs from stdin and writes answers to stdout, one at a time, each a 4-byte big-endian length and a
pickle (both ends are this package, in processes of one server): a job is ``(upload, max_bytes, max_pixels)``,
an answer a ``CleanImage`` or the refusal's field errors. End of stdin ends the process.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import struct
import sys
from typing import BinaryIO

from taxi.errors import ValidationFailed
from taxi.services.images import CleanImage, clean_image

HEADER = struct.Struct("!I")
NICENESS = 10  # added to the worker's own: an event loop (CFS weight 1024) then outweighs this process (110)
_PR_SET_PDEATHSIG = 1  # prctl(2)


def detach_from_signals(worker: int) -> None:
    """Leave stopping to the worker, die with it, and yield the CPU to event loops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the process group; the worker stops us
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the worker's shutdown still ends us (end of stdin)
            pass
    if os.getppid() != worker:  # the worker died before the line above took effect
        os._exit(0)
    try:
        os.nice(NICENESS)
    except OSError:
        pass


def answer(job: tuple[bytes, int, int]) -> CleanImage | dict[str, list[str]]:
    try:
        return clean_image(*job)
    except ValidationFailed as exc:
        return exc.errors


def read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def serve(jobs: BinaryIO, answers: BinaryIO) -> None:
    while (frame := read_frame(jobs)) is not None:
        write_frame(answers, pickle.dumps(answer(pickle.loads(frame)), pickle.HIGHEST_PROTOCOL))


def main() -> None:
    detach_from_signals(int(sys.argv[1]))
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
