"""What scripts/test runs pytest inside: a PostgreSQL and a Redis for the suite, on any machine.

The suite uses the servers at TAXI_TEST_PG_HOST:TAXI_TEST_PG_PORT (127.0.0.1:5432) and TAXI_TEST_REDIS_URL
(redis://127.0.0.1:6379/0). When nothing answers there, a private throw-away instance is started from the local
binaries on a free port (PostgreSQL's initdb and pg_ctl, redis-server), the suite is pointed at it, and it is
stopped and its files removed when pytest ends, however it ends. Missing binaries are one line saying what to install.

    python scripts/taxiload/testenv.py [pytest arguments]
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: run as a file, it imports its package
from taxiload.harness import PrivatePostgres, PrivateRedis, SetupError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def answers(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        return False
    return True


def say(message: str) -> None:
    print(f"scripts/test: {message}", flush=True)


def postgres(env: dict[str, str], cleanups: list[Callable[[], None]]) -> None:
    """Point the suite at a private PostgreSQL when none answers where it looks."""
    host = env.get("TAXI_TEST_PG_HOST", "127.0.0.1")
    port = int(env.get("TAXI_TEST_PG_PORT", "5432"))
    if answers(host, port):
        return
    try:
        server = PrivatePostgres(prefix="taxi-test-pg-")
    except SetupError as exc:
        raise SetupError(
            f"no PostgreSQL answers on {host}:{port}, and a private one cannot be started: {exc}; "
            "or point TAXI_TEST_PG_HOST/TAXI_TEST_PG_PORT at a running server"
        ) from None
    cleanups.append(server.remove)
    server.start()
    say(f"no PostgreSQL answers on {host}:{port}: started a private one on 127.0.0.1:{server.port} in {server.dir}")
    env.update(TAXI_TEST_PG_HOST="127.0.0.1", TAXI_TEST_PG_PORT=str(server.port), TAXI_TEST_PG_USER="postgres")


def redis(env: dict[str, str], cleanups: list[Callable[[], None]]) -> None:
    """Point the suite at a private redis-server when none answers at TAXI_TEST_REDIS_URL."""
    url = env.get("TAXI_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if answers(host, port):
        return
    folder = Path(tempfile.mkdtemp(prefix="taxi-test-redis-"))
    cleanups.append(lambda: shutil.rmtree(folder, ignore_errors=True))
    try:
        server = PrivateRedis(folder)
    except SetupError as exc:
        raise SetupError(
            f"no Redis answers at {url}, and a private one cannot be started: {exc}; "
            "or point TAXI_TEST_REDIS_URL at a running server"
        ) from None
    cleanups.append(server.stop)
    server.start()
    say(f"no Redis answers at {url}: started a private redis-server on 127.0.0.1:{server.port} in {folder}")
    env["TAXI_TEST_REDIS_URL"] = server.url


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the clean-up below


def main(pytest_args: list[str]) -> int:
    signal.signal(signal.SIGTERM, _stop)
    env = dict(os.environ)
    cleanups: list[Callable[[], None]] = []
    started = False
    try:
        postgres(env, cleanups)
        redis(env, cleanups)
        started = bool(cleanups)
        proc = subprocess.Popen([sys.executable, "-m", "pytest", *pytest_args], env=env)
        try:
            return proc.wait()
        except BaseException:
            proc.terminate()  # Ctrl-C reached pytest too (same process group); SIGTERM only us
            proc.wait(60)
            raise
    except SetupError as exc:
        print(f"scripts/test: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # a private instance did not start: its own words
        print(f"scripts/test: could not start a private instance: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
        if started:
            say("stopped and removed the private instances")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
