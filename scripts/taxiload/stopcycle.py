"""Start/stop cycles of the supervised server (``python -m taxi.launch``): start it, keep a socket open and
requests in flight, send SIGINT or SIGTERM to its main process or its whole process group after a delay, and
measure how long it takes to end, with which exit code, and whether anything of it is left behind.

Shared by the test suite (a few cycles per combination) and ``scripts/stop_cycles`` (30 per combination).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from taxiload.harness import REPO, free_port

HANG = 15.0  # a server still running this long after the signal is hung: it is killed and the cycle fails
REQUIRED = 5.0  # what the server promises: ended within this many seconds, with exit code 0


@dataclass
class Cycle:
    signal: str  # SIGINT | SIGTERM
    target: str  # main | group
    delay: float  # seconds from the start to the signal
    stop_seconds: float  # from the signal to the end of the main process (HANG when it hung)
    exit_code: int | None  # None when it hung
    leftovers: int  # processes of its group still alive after the main process ended
    served: bool  # a request had been answered before the signal came
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.stop_seconds <= REQUIRED and self.leftovers == 0


def _traffic(url: str, token: str | None, stop: threading.Event, served: threading.Event) -> None:
    """Until ``stop``: once the server answers, hold a socket open (when there is a token) and keep requests
    in flight. Every error is expected here (the server is starting or stopping)."""
    ws = None
    try:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"{url}/api/health/", timeout=2) as response:
                    response.read()
                served.set()
                if ws is None and token:
                    from websockets.sync.client import connect

                    ws = connect(f"{url.replace('http', 'ws', 1)}/taxi/?token={token}", open_timeout=2)
                    ws.send('{"type": "echo.message", "data": 1}')
            except (OSError, http.client.HTTPException, ValueError, Exception):
                time.sleep(0.05)
    finally:
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass


def _group_alive(pgid: int) -> int:
    """How many processes of group ``pgid`` are still alive (zombies do not count)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            count += 1
    return count


def run_cycle(
    env: dict[str, str],
    workers: int,
    signum: signal.Signals,
    target: str,
    delay: float,
    token: str | None = None,
    log: Path | None = None,
    after_ready: bool = False,
) -> Cycle:
    """One start, ``delay`` seconds of life with traffic, one signal, and the measured end.

    ``after_ready``: count ``delay`` from the first answer (up to HANG s of start-up) instead of from the start, so
    that a stop while serving is tested however slow the machine is."""
    port = free_port()
    cmd = [sys.executable, "-m", "taxi.launch", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    out_path = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"taxi-stopcycle-{port}.log"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = time.monotonic()
    stop, served = threading.Event(), threading.Event()
    traffic = threading.Thread(target=_traffic, args=(f"http://127.0.0.1:{port}", token, stop, served), daemon=True)
    traffic.start()
    if after_ready and served.wait(HANG):
        started = time.monotonic()
    time.sleep(max(0.0, started + delay - time.monotonic()))
    signalled = time.monotonic()
    served_before = served.is_set()
    try:
        if target == "group":
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
    except ProcessLookupError:
        pass
    try:
        code: int | None = proc.wait(HANG)
        stop_seconds = time.monotonic() - signalled
    except subprocess.TimeoutExpired:
        code, stop_seconds = None, HANG
    stop.set()
    time.sleep(0.5)  # the shared-state process and the resource tracker end right after the main process
    leftovers = _group_alive(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if code is None:
        proc.wait(5)
    traffic.join(5)
    output = out_path.read_text(errors="replace")
    if log is None:
        out_path.unlink(missing_ok=True)
    return Cycle(signum.name, target, delay, stop_seconds, code, leftovers, served_before, output)


def sign_up_token(env: dict[str, str], workers: int) -> str:
    """Start a server once to create a rider and return its access token (for the cycles' sockets)."""
    port = free_port()
    cmd = [sys.executable, "-m", "taxi.launch", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        body = {"username": "cycles@example.com", "password1": "pAssw0rd!", "password2": "pAssw0rd!", "group": "rider"}
        while time.monotonic() < deadline:
            try:
                _post(f"{url}/api/sign_up/", body)
                tokens = _post(f"{url}/api/log_in/", {"username": "cycles@example.com", "password": "pAssw0rd!"})
                return str(tokens["access"])
            except (OSError, http.client.HTTPException):
                time.sleep(0.2)
        raise RuntimeError("the server did not answer within 60 s")
    finally:
        time.sleep(1.5)  # past Sanic's start-up window
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _post(url: str, body: dict[str, str]) -> dict[str, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as err:
        if err.code == 400 and "sign_up" in url:
            return {}  # already signed up by an earlier run
        raise
