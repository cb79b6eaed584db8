"""Start the server as an operator should: ``serve(...)`` runs Sanic's main process with supervised workers and a
stop that never hangs, and says where it listens. ``python -m taxi.launch`` is the same from a shell.

A stop signal may come at any moment, even while the modules are still being imported: the first thing ``serve``
does is take SIGINT and SIGTERM, so a stop before the workers exist ends the process with 0 (or is carried out
as soon as they start), instead of a KeyboardInterrupt traceback or death by SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

_early: list[int] = []  # stop signals that came before taxi.supervise was imported


def _record(signum: int, _frame: FrameType | None) -> None:
    _early.append(signum)


def take_signals() -> None:
    """Note SIGINT and SIGTERM from now on (standard library only: nothing heavy is imported first)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _record)


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    backlog: int = 1024,
    announce: bool = True,
) -> int:
    """Run the server from the ``TAXI_*`` environment until it is stopped; return the exit code.

    ``backlog`` is the listen queue: Sanic's default of 100 overflows in a burst of connecting phones.
    """
    take_signals()
    from taxi import supervise  # light: it imports Sanic only when used

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, supervise.record_early_stop)
    if _early:
        supervise.EARLY.signum = _early[-1]

    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from taxi.app import create_app

    loader = AppLoader(factory=create_app)
    app = loader.load()
    app.prepare(host=host, port=port, workers=workers, backlog=backlog, motd=False, access_log=False)
    if announce:
        where = f"[{host}]" if ":" in host else host
        print(f"taxi: listening on http://{where}:{port} with {workers} worker(s)", file=sys.stderr, flush=True)
    if supervise.EARLY.signum is not None:
        return 0  # stopped before anything was started
    Sanic.serve(primary=app, app_loader=loader)
    return 0


def main(argv: list[str] | None = None) -> int:
    take_signals()
    import argparse

    parser = argparse.ArgumentParser(prog="python -m taxi.launch", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("TAXI_WORKERS", "1")))
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.workers, backlog=args.backlog)


if __name__ == "__main__":
    sys.exit(main())
