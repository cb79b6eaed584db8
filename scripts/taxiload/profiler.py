"""--profile of the benchmarks: `py-spy record` of one worker, written as an SVG flame graph to bench-results/."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from taxiload.harness import REPO, ServerProcess, worker_pids

PROFILE_DIR = REPO / "bench-results"  # git-ignored


def start_profile(server: ServerProcess, seconds: float, name: str) -> tuple[subprocess.Popen[bytes], Path] | None:
    """`py-spy record` one worker of ``server`` for ``seconds``; (process, SVG path), or None with a message."""
    if not shutil.which("py-spy"):
        print("  (--profile: py-spy is not installed, no profile; `pip install py-spy` to get one)")
        return None
    assert server.proc is not None
    if not (pids := worker_pids(server.proc.pid)):
        print("  (--profile: found no worker process, no profile)")
        return None
    PROFILE_DIR.mkdir(exist_ok=True)
    out = PROFILE_DIR / f"profile-{name}-w{server.workers}-{time.strftime('%Y%m%d-%H%M%S')}.svg"
    cmd = ["py-spy", "record", "--pid", str(pids[0]), "--duration", str(max(1, round(seconds))), "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out
