"""Real processes for the tests and the load tools: the server started the production way, a private PostgreSQL
cluster and a private redis-server that can be stopped and started again, free ports, one JSON-over-HTTP helper,
``python -m taxi migrate``, and the lookup of Sanic's worker processes.

The tests import it as ``taxiload.harness`` (setup.cfg puts scripts/ on pytest's pythonpath); the scripts put
scripts/ on sys.path themselves. Standard library only at import time: psycopg2 and redis are imported where used.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# One scale for every wait of the harness (server start-up, the settle after it, shutdown) and of the tests:
# raise it on a slow machine instead of editing numbers.
TIMEOUT_SCALE = float(os.environ.get("TAXI_TEST_TIMEOUT_SCALE", "1"))
# Sanic 25.12.1 can hang at shutdown when SIGTERM reaches the main process before its manager has the ACK of every
# worker: it loops, burning CPU, until the workers get SIGKILL. Right after the first 200 that happened every time;
# so a server counts as started this long after its first 200 (details: docs/pitfalls.md).
SETTLE_AFTER_READY = 1.5
# In the environment of every process Sanic spawns as a worker (not in the main process or the manager).
WORKER_MARK = b"SANIC_WORKER_NAME=Sanic-Server-"


class SetupError(Exception):
    """A tool or a service that the harness needs is missing."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(
    url: str, body: Any = None, token: str | None = None, method: str | None = None, timeout: float = 15.0
) -> tuple[int, Any]:
    """One JSON request with urllib (POST when there is a body, else GET); returns (status, decoded body).

    An error status comes back like a success, with its body decoded as JSON (as text if it is not JSON)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw or b"null")
        except ValueError:
            return err.code, raw.decode(errors="replace")


def migrate(env: dict[str, str], timeout: float = 120.0) -> str:
    """``python -m taxi migrate`` with exactly ``env``; returns what it printed, RuntimeError with it on failure."""
    done = subprocess.run(
        [sys.executable, "-m", "taxi", "migrate"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode:
        raise RuntimeError(f"python -m taxi migrate failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def worker_pids(main_pid: int) -> list[int]:
    """The Sanic workers of a server: children of its main process with WORKER_MARK in their environment (the
    manager and multiprocessing's helpers do not have it), sorted."""
    try:
        threads = os.listdir(f"/proc/{main_pid}/task")
    except OSError:
        return []
    pids = set()
    for tid in threads:
        try:
            children = Path(f"/proc/{main_pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                # multiprocessing's resource tracker can be started in the moment the mark is set: not a worker.
                if (
                    WORKER_MARK in Path(f"/proc/{child}/environ").read_bytes()
                    and b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()
                ):
                    pids.add(int(child))
            except OSError:
                continue
    return sorted(pids)


# The ways to start the server: Sanic's own command line on the factory, the package's ``taxi serve``, and the
# supervised launcher it runs (``python -m taxi.launch``); Sanic's command line always listens with a backlog of 100.
LAUNCHERS = {
    "sanic": [sys.executable, "-m", "sanic", "taxi.app:create_app", "--factory", "--no-motd"],
    "taxi": [sys.executable, "-m", "taxi", "serve"],
    "launch": [sys.executable, "-m", "taxi.launch"],
}


class ServerProcess:
    """``python -m sanic taxi.app:create_app --factory --workers N`` (or ``python -m taxi serve --workers N`` with
    ``launcher="taxi"``, or any command given as a list) on a free port, in its own session, and stopped as a supervisor should: SIGTERM to the main
    PID only (a SIGTERM to the whole process group makes the main process exit 1 with "Broken pipe"), SIGKILL to
    the group as a last resort.

    ``env`` is added to this process's environment. Its output goes to ``log`` (kept), or to a temporary file that
    ``close()`` removes after keeping the text for ``output()``.
    """

    def __init__(
        self,
        env: dict[str, str],
        workers: int = 1,
        port: int | None = None,
        log: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
        launcher: str | list[str] = "sanic",
        cwd: Path = REPO,
        launch: bool = False,
    ) -> None:
        # A name in LAUNCHERS, or the command itself (an installed `taxi serve`); --host, --port, --workers follow.
        # launch=True is the same as launcher="launch".
        if launch:
            launcher = "launch"
        self.launcher = LAUNCHERS[launcher] if isinstance(launcher, str) else launcher
        self.cwd = cwd
        self.port = port or free_port()
        self.launch = launch  # python -m taxi.launch (supervised workers) instead of the sanic command
        self.workers = workers
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.keep_log = log is not None
        if log is None:
            fd, name = tempfile.mkstemp(prefix="taxi-server-", suffix=".log")
            os.close(fd)
            log = Path(name)
        self.log = log
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen[bytes] | None = None
        self._final: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start it and wait for the first 200 of GET /api/health/, then SETTLE_AFTER_READY more. If it exits or
        does not answer in time: close() and RuntimeError (with its output, or where its log is)."""
        address = ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        cmd = [*self.launcher, *address]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self.preexec_fn,
            )
        self._wait_ready(timeout * TIMEOUT_SCALE)
        time.sleep(SETTLE_AFTER_READY * TIMEOUT_SCALE)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.close()
                raise RuntimeError(self._failure(f"the server exited with {self.proc.returncode}"))
            try:
                if call(f"{self.url}/api/health/", timeout=1)[0] == 200:
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.1)
        self.close()
        raise RuntimeError(self._failure(f"GET /api/health/ gave no 200 within {timeout:.0f} s"))

    def _failure(self, what: str) -> str:
        return f"{what}; see {self.log}" if self.keep_log else f"{what}:\n{self.output()}"

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM to the main PID; SIGKILL to the group after ``timeout`` s, or to whatever of it outlived the main
        process. Returns the main process's exit code (0 if it was never started)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout * TIMEOUT_SCALE)
            except subprocess.TimeoutExpired:
                print(
                    f"  ! the server (workers={self.workers}) ignored SIGTERM for {timeout:.0f} s: SIGKILL to its group"
                )
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # nothing of it is left, as it should be
        return self.proc.wait(5)

    def output(self) -> str:
        """Everything the server printed so far (kept after close())."""
        if self._final is not None:
            return self._final
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        """Stop the server if it runs, keep its output, and remove a temporary log."""
        if self._final is not None:
            return
        if self.proc is not None:
            self.stop()
        self._final = self.output()
        if not self.keep_log:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def postgres_bindir() -> Path:
    """Where PostgreSQL's initdb and pg_ctl are: TAXI_TEST_PG_BINDIR if set (and nowhere else), else the newest
    /usr/lib/postgresql/<version>/bin (Debian's layout), else beside the initdb on PATH; SetupError if none."""
    given = os.environ.get("TAXI_TEST_PG_BINDIR")
    if given:
        candidates = [Path(given)]
    else:
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        )
        found = shutil.which("initdb")
        candidates = [*reversed(versions), *([Path(found).resolve().parent] if found else [])]
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    where = given or "/usr/lib/postgresql/*/bin or PATH"
    raise SetupError(f"PostgreSQL's initdb and pg_ctl were not found in {where} (Debian: apt-get install postgresql)")


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port (initdb into a temp dir, pg_ctl start/stop), so that it can be
    stopped and started without touching the machine's server. PostgreSQL refuses to run as root, so as root every
    tool runs as the ``postgres`` user through runuser. The binaries: see ``postgres_bindir``."""

    def __init__(self, prefix: str = "taxi-pg-") -> None:
        self.bindir = postgres_bindir()
        self.port = free_port()
        self.server = f"postgresql://postgres@127.0.0.1:{self.port}"
        # Not under pytest's tmp_path: that is private to root, and the cluster runs as postgres.
        self.dir = Path(tempfile.mkdtemp(prefix=f"{prefix}{self.port}-"))
        self._as: list[str] = []
        try:
            if os.geteuid() == 0:
                try:
                    user = pwd.getpwnam("postgres")
                except KeyError:
                    raise SetupError("PostgreSQL refuses to run as root, and there is no postgres user") from None
                os.chown(self.dir, user.pw_uid, user.pw_gid)
                self._as = ["runuser", "-u", "postgres", "--"]
            self._run(
                "initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"
            )
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _run(self, tool: str, *args: str) -> None:
        # Own session: a Ctrl-C in the terminal must not reach the postmaster; remove() stops it.
        done = subprocess.run(
            [*self._as, str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            timeout=90,
            start_new_session=True,
        )
        if done.returncode:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        data, log = str(self.dir / "data"), str(self.dir / "log")
        self._run("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "-t", "60", "stop")

    def remove(self) -> None:
        """Stop the cluster if it runs (fast, then immediate) and delete its files."""
        for mode in ("fast", "immediate"):
            try:
                self.stop(mode)
                break
            except (RuntimeError, subprocess.TimeoutExpired):
                if not (self.dir / "data" / "postmaster.pid").exists():
                    break  # it was not running
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(dbname="postgres", host="127.0.0.1", port=self.port, user="postgres")
        conn.autocommit = True
        try:
            conn.cursor().execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


class PrivateRedis:
    """``redis-server --port N --bind 127.0.0.1 --save "" --appendonly no`` on a free port, its files and log
    (redis.log) in ``log_dir``; it can be stopped and started again on the same port."""

    def __init__(self, log_dir: Path) -> None:
        # TAXI_TEST_REDIS_SERVER names the binary (default: redis-server on PATH).
        binary = shutil.which(os.environ.get("TAXI_TEST_REDIS_SERVER") or "redis-server")
        if binary is None:
            raise SetupError("redis-server was not found (Debian: apt-get install redis-server)")
        self.binary, self.log_dir, self.port = binary, log_dir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait until it answers PING."""
        import redis

        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with (self.log_dir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, "--dir", str(self.log_dir)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.log_dir}/redis.log")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer PING within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
