"""``taxi serve``: the server the production way (Sanic's worker manager, one process per worker), saying where it
listens, with the listen backlog of ``TAXI_BACKLOG``.

``launch`` is the one place that starts Sanic: whatever supervises the workers plugs in there.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Mapping
from typing import Any

from sanic import Sanic
from sanic.worker.loader import AppLoader

from taxi.config import ConfigError, Settings

FACTORY = "taxi.app:create_app"  # what every worker process calls, as `sanic taxi.app:create_app --factory` does


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
    launch(args.host, args.port, args.workers, settings.backlog)
    return 0


def launch(host: str, port: int, workers: int, backlog: int) -> None:
    """Serve until stopped: bind ``host:port`` with ``backlog`` in this process, then run ``workers`` worker
    processes that each build the app with the factory. Prints the address once the socket is bound."""
    loader = AppLoader(FACTORY, as_factory=True)
    app: Sanic[Any, Any] = loader.load()
    app.register_listener(_announce, "main_process_ready")
    app.prepare(host=host, port=port, workers=workers, backlog=backlog, motd=False)
    Sanic.serve(primary=app, app_loader=loader)


def _announce(app: Sanic[Any, Any]) -> None:
    """Say where the server listens (the bound socket's address), with how many workers and which backlog."""
    info = app.state.server_info[0].settings
    bound: socket.socket | None = info.get("sock")
    host, port = bound.getsockname()[:2] if bound is not None else (info.get("host"), info.get("port"))
    shown = f"[{host}]" if ":" in str(host) else host
    workers = app.state.workers
    print(
        f"taxi: listening on http://{shown}:{port} ({workers} worker{'s' if workers > 1 else ''}, "
        f"backlog {info.get('backlog')})",
        flush=True,
    )
