"""The ``taxi`` command (also ``python -m taxi``): ``serve``, ``migrate``, and the administration of ``users``
and ``trips``.

Each subcommand module registers its parsers with ``add(subparsers)``; every parser carries the function that
runs it. The environment is read here, once, and handed down; a failure is one line on stderr and an exit status,
never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from taxi.cli import migrate, serve, trips, users
from taxi.cli.common import CommandError
from taxi.config import ConfigError
from taxi.errors import APIError, ValidationFailed

__all__ = ["main"]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="taxi",
        description="Run and administer the taxi server. Every command reads the same TAXI_* variables as the server.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve, migrate, users, trips):
        module.add(sub)
    return top


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run one command; returns its exit status (0 done, 1 failed, 2 bad usage or configuration)."""
    args = parser().parse_args(argv)
    env = os.environ if env is None else env
    if args.command != "serve":  # the server configures its own logging
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args, env))
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", 2)
    except ValidationFailed as exc:
        return _fail("; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.errors.items()), 2)
    except (APIError, CommandError) as exc:
        return _fail(str(exc.detail if isinstance(exc, APIError) else exc), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def _fail(message: str, status: int) -> int:
    print(f"taxi: {message}", file=sys.stderr)
    return status
