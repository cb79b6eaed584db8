"""``taxi serve`` as an operator runs it, and the package installed with pip into a fresh virtual environment."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from taxiload.harness import REPO, TIMEOUT_SCALE, ServerProcess, call
from tests.servers import server_env
from tests.support import PASSWORD


def listen_backlog(port: int) -> int:
    """The backlog of the socket listening on 127.0.0.1:port, as the kernel reports it (``ss``'s Send-Q)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    backlogs = {int(line.split()[2]) for line in out.splitlines() if line.strip()}
    assert len(backlogs) == 1, out
    return backlogs.pop()


def test_serve_says_where_it_listens_and_queues_the_configured_backlog(pg_database_url, tmp_path):
    env = server_env(pg_database_url, tmp_path, TAXI_BACKLOG="77")
    with ServerProcess(env, workers=2, launcher="taxi") as server:
        assert call(f"{server.url}/api/health/") == (200, {"status": "ok"})
        assert listen_backlog(server.port) == 77
        assert server.stop() == 0
    log = server.output()
    assert f"taxi: listening on http://127.0.0.1:{server.port} with 2 worker(s)\n" in log, log
    assert log.count("Starting worker") >= 2 and "Traceback" not in log, log


def test_the_sanic_command_line_keeps_its_fixed_backlog(tmp_path):
    env = {"TAXI_DATABASE_URL": f"sqlite:///{tmp_path}/s.sqlite3", "TAXI_REDIS_URL": "", "TAXI_BACKLOG": "77"}
    with ServerProcess(env) as server:
        assert listen_backlog(server.port) == 100  # why `taxi serve` exists: Sanic's CLI cannot change it


def test_serve_refuses_a_shape_that_cannot_work_in_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "TAXI_DATABASE_URL": f"sqlite:///{tmp_path}/r.sqlite3"}
    for args, message in (
        (["--workers", "2"], "--workers 2 needs TAXI_REDIS_URL"),
        (["--port", "0"], "--port: expected 1 to 65535, got 0"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "taxi", "serve", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_pip_install_gives_a_taxi_command_that_serves_and_administers(tmp_path):
    """``pip install .`` into a new virtual environment, from a copy of the sources (nothing of the checkout is on
    its path). The environment sees this one's packages (a .pth file) so that pip finds every dependency installed
    and downloads nothing; it still resolves the package's declared requirements against them (``pip check``).
    What a networked install adds, the download of the pinned wheels, is what CI's `pip install -r` does anyway."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "*cache*", "media", "*.sqlite3*"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir)  # no pip or setuptools of its own: this environment's, newer, through the .pth file
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    Path(site, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input", "--no-cache-dir"]
    installed = subprocess.run(
        [*pip, "install", "--no-build-isolation", "--no-index", str(source)],
        capture_output=True,
        text=True,
        timeout=300 * TIMEOUT_SCALE,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert subprocess.run([*pip, "check"], capture_output=True, text=True).returncode == 0

    where = subprocess.run([python, "-c", "import taxi; print(taxi.__file__)"], cwd=tmp_path, capture_output=True)
    assert where.stdout.decode().startswith(str(env_dir)), where  # the installed copy, not the sources
    command = env_dir / "bin" / "taxi"
    work = tmp_path / "work"  # the embedded default: its database and key in the working directory
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "TAXI_BCRYPT_ROUNDS": "4", "TAXI_USER_PASSWORD": PASSWORD}

    def run(*args: str) -> str:
        done = subprocess.run([command, *args], cwd=work, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "applied 1" in run("migrate")
    assert run("users", "create", "--username", "pip", "--group", "driver") == "created driver 'pip' (id 1)\n"
    assert [u["username"] for u in json.loads(run("users", "list", "--json"))] == ["pip"]
    server = ServerProcess(env, launcher=[str(command), "serve"], cwd=work)
    with server:
        assert call(f"{server.url}/api/log_in/", {"username": "pip", "password": PASSWORD})[0] == 200
        assert server.stop() == 0
    assert f"taxi: listening on http://127.0.0.1:{server.port} with 1 worker(s)\n" in server.output()
    assert (work / "taxi.sqlite3").exists() and not (source / "taxi.sqlite3").exists()
