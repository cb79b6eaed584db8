"""Real server processes for tests that cross process boundaries (``--workers N``, two servers, restarts)."""

from __future__ import annotations

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
