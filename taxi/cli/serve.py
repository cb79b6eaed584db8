"""``taxi serve``: the server the production way (Sanic's worker manager under ``taxi.launch``'s supervision, one
process per worker), saying where it listens, with the listen backlog of ``TAXI_BACKLOG``.

``launch`` is the one place the command line starts the server.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from taxi.config import ConfigError, Settings


def add(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the server",
        description="Run the server until SIGTERM or Ctrl-C. Configured by the TAXI_* variables (see the README).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1; more than 1 needs TAXI_REDIS_URL)"
    )
    serve.set_defaults(run=run)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    # Checked here, before any process starts, so that a mistake is one line and not a failed start-up.
    settings = Settings.from_env(env)
    if args.workers < 1:
        raise ConfigError(f"--workers: expected at least 1, got {args.workers}")
    if not 1 <= args.port <= 65535:  # Sanic would take 0 for its default, 8000
        raise ConfigError(f"--port: expected 1 to 65535, got {args.port}")
    if args.workers > 1 and not settings.redis_url:
        raise ConfigError(f"--workers {args.workers} needs TAXI_REDIS_URL: the in-process broker reaches one worker")
    return launch(args.host, args.port, args.workers, settings.backlog)


def launch(host: str, port: int, workers: int, backlog: int) -> int:
    """Serve until stopped, through the supervised launcher (``taxi.launch``: dead workers replaced, a stop that
    never hangs), which binds ``host:port`` with ``backlog`` and says where it listens; returns the exit code."""
    from taxi import launch as launcher  # it takes the stop signals first thing, before the heavy imports

    return launcher.serve(host, port, workers, backlog=backlog)
