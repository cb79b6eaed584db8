"""Real server processes for tests that cross process boundaries (``--workers N``, two servers, restarts)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
# One scale for every wait in these tests: raise it on a slow machine instead of editing numbers.
TIMEOUT_SCALE = float(os.environ.get("TAXI_TEST_TIMEOUT_SCALE", "1"))


class ServerProcess:
    """``python -m sanic taxi.app:create_app --factory --workers N`` on a free port, stopped like production does."""

    def __init__(self, env: dict[str, str], workers: int = 1, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workers = workers
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log = tempfile.NamedTemporaryFile(prefix="taxi-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None
        self._final: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "sanic",
            "taxi.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--no-motd",
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 30 * TIMEOUT_SCALE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/health/", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        else:
            self.close()
            raise RuntimeError(f"server did not answer within 30 s:\n{self.output()}")
        # Every worker must be up (and Sanic's manager must have their ACKs: pitfall 12) before a SIGTERM.
        time.sleep(1.5 * TIMEOUT_SCALE)
        return self

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM to the main process only (as a supervisor should), SIGKILL of the group as a last resort."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout * TIMEOUT_SCALE)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        """Everything the server printed so far (kept after the context exits)."""
        if self._final is not None:
            return self._final
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server if it runs, keep its output, and remove the log file."""
        if self._final is not None:
            return
        self.stop()
        self._final = self.output()
        self.log.close()
        os.unlink(self.log.name)


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, so a test can stop and start it without touching the
    machine's shared server. PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user."""

    def __init__(self) -> None:
        import pwd
        import shutil

        bindir = Path(os.environ.get("TAXI_TEST_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
        if not (bindir / "initdb").exists():
            found = shutil.which("initdb")
            bindir = Path(found).resolve().parent if found else bindir
        self.bindir = bindir
        self.port = free_port()
        # Not under pytest's tmp_path: that is private to root, and the cluster runs as postgres.
        self.dir = Path(tempfile.mkdtemp(prefix=f"taxi-pg-{self.port}-"))
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bindir / tool), *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop the cluster if it runs and delete its files."""
        import shutil

        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(dbname="postgres", host="127.0.0.1", port=self.port, user="postgres")
        conn.autocommit = True
        try:
            conn.cursor().execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


def server_env(url: Any, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """TAXI_* variables for a server process on the test PostgreSQL database ``url`` and the test Redis."""
    import secrets

    from tests.conftest import REDIS_URL, RUN_ID, SECRET

    env = {
        "TAXI_DATABASE_URL": f"postgresql://{url.user}@{url.host}:{url.port}/{url.name}",
        "TAXI_REDIS_URL": REDIS_URL,
        # Unique per server: log-in counters live in Redis for a window and must not leak into the next run.
        "TAXI_REDIS_PREFIX": f"taxi_test_{RUN_ID}_{secrets.token_hex(3)}:",
        "TAXI_SECRET_KEY": SECRET,
        "TAXI_BCRYPT_ROUNDS": "4",
        "TAXI_MEDIA_ROOT": str(tmp_path / "media"),
        "TAXI_SIGNUPS_PER_ADDRESS": "1000",  # the tests sign up many users from 127.0.0.1
    }
    env.update(overrides)
    return env


def call(
    url: str, body: dict[str, Any] | None = None, token: str | None = None, method: str | None = None
) -> tuple[int, Any]:
    """One JSON request with urllib (POST when there is a body); returns (status, decoded body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def migrate_cli(env: dict[str, str]) -> str:
    """Run ``python -m taxi migrate`` as an operator would, with only ``env``; return what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "taxi", "migrate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
