"""The photo process: ``python -m taxi.services.image_child <worker pid>``, started by ``taxi.services.image_work``.

It reads jobs from stdin and writes answers to stdout, one at a time. A job is its ``JOB`` header (the upload's
length, ``max_bytes``, ``max_pixels``) and the upload's bytes as they are (a phone photo is megabytes: nothing
copies it on the way); an answer is a 4-byte big-endian length and a pickle (both ends are this package, in
processes of one server) of a ``CleanImage`` or of the refusal's field errors. End of stdin ends the process.
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

JOB = struct.Struct("!IQQ")
ANSWER = struct.Struct("!I")
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


def answer(body: bytes, max_bytes: int, max_pixels: int) -> CleanImage | dict[str, list[str]]:
    try:
        return clean_image(body, max_bytes, max_pixels)
    except ValidationFailed as exc:
        return exc.errors


def serve(jobs: BinaryIO, answers: BinaryIO) -> None:
    while len(head := jobs.read(JOB.size)) == JOB.size:
        size, max_bytes, max_pixels = JOB.unpack(head)
        body = jobs.read(size)
        if len(body) < size:
            return
        payload = pickle.dumps(answer(body, max_bytes, max_pixels), pickle.HIGHEST_PROTOCOL)
        answers.write(ANSWER.pack(len(payload)))
        answers.write(payload)
        answers.flush()


def main() -> None:
    detach_from_signals(int(sys.argv[1]))
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
