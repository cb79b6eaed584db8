"""What the benchmark scripts share: the venv re-exec, the throw-away database and Redis prefix, the server
process (started the production way, stopped by its main PID), CPU and memory accounting from /proc, and HTTP.

Not a script: `scripts/bench_http` and `scripts/bench_ws` import it (their directory is on sys.path).
"""

from __future__ import annotations

import collections
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"  # trust auth
REDIS_URL = "redis://127.0.0.1:6379/0"
PROFILE_DIR = REPO / "bench-results"  # git-ignored
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
CORES = os.cpu_count() or 1


def use_venv(script: str) -> None:
    """Re-execute the running script with the repository's .venv/bin/python unless psycopg2 imports here (once)."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        if VENV_PYTHON.exists() and not os.environ.get("TAXI_BENCH_REEXEC"):
            os.environ["TAXI_BENCH_REEXEC"] = "1"
            main = os.path.abspath(sys.argv[0])
            os.execv(VENV_PYTHON, [str(VENV_PYTHON), main, *sys.argv[1:]])
        sys.exit(f"{script}: psycopg2 is missing; create the venv first ({VENV_PYTHON})")


# --- /proc: CPU, process trees, memory ---------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[int, float, str] | None:
    """(process group, CPU seconds used so far, command name) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm, fields = raw[raw.index("(") + 1 : raw.rindex(")")], raw[raw.rindex(")") + 2 :].split()
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / TICK, comm


def processes() -> dict[int, tuple[int, float, str]]:
    return {int(e.name): st for e in os.scandir("/proc") if e.name.isdigit() and (st := proc_stat(int(e.name)))}


def cpu_snapshot(pgid: int, db_name: str | None = None) -> dict[str, float]:
    """CPU seconds so far: the server's process group, PostgreSQL, Redis, and the whole box (busy and total).

    With ``db_name``, PostgreSQL is its shared background processes plus the backends of that database only, so a
    test suite using the same PostgreSQL lands in "other" (and its backends coming and going cannot skew pg).
    """
    procs = processes()
    fields = [int(x) / TICK for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    pg = [pid for pid, (_, _, comm) in procs.items() if comm.startswith("postgres")]
    if db_name is not None:
        pg = [pid for pid in pg if _pg_counts(read_bytes(f"/proc/{pid}/cmdline"), db_name)]
    return {
        "server": sum(cpu for group, cpu, _ in procs.values() if group == pgid),
        "pg": sum(procs[pid][1] for pid in pg),
        "redis": sum(cpu for _, cpu, comm in procs.values() if comm.startswith("redis-server")),
        "busy": sum(fields) - fields[3] - fields[4],
        "softirq": fields[5] + fields[6],  # interrupts: mostly the kernel's loopback TCP, charged to no process
        "total": sum(fields),
    }


def _pg_counts(cmdline: bytes, db_name: str) -> bool:
    """A PostgreSQL process that is not a client backend (postmaster, checkpointer, ...) or one of ``db_name``'s."""
    client_backend = b"(" in cmdline or b"[local]" in cmdline  # "postgres: 15/main: user db 127.0.0.1(5432) idle"
    return not client_backend or f" {db_name} ".encode() in cmdline


def cpu_percent(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """server%, pg%, redis%, irq% (of one core) and the box's idle% between two cpu_snapshot()s ``wall`` s apart."""
    used = {k: 100 * (after[k] - before[k]) / max(wall, 1e-9) for k in ("server", "pg", "redis", "softirq", "busy")}
    idle = 100 * (1 - (after["busy"] - before["busy"]) / max(after["total"] - before["total"], 1e-9))
    return {
        "server_cpu": used["server"],
        "pg_cpu": used["pg"],
        "redis_cpu": used["redis"],
        "irq_cpu": used["softirq"],
        "busy_cpu": used["busy"],
        "idle_pct": idle,
    }


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (by parent PID), as found in /proc now."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                raw = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            children[int(raw[raw.rindex(")") + 2 :].split()[1])].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def memory_kib(pids: list[int]) -> dict[str, int | None]:
    """Summed RSS and PSS (KiB) of ``pids`` from /proc/<pid>/smaps_rollup (RSS from statm if that is unreadable;
    PSS is then None), and their open file descriptors."""
    rss, pss, fds = 0, 0, 0
    pss_ok = True
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            rss += int(re.search(r"^Rss:\s+(\d+) kB", rollup, re.M).group(1))  # type: ignore[union-attr]
            pss += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1))  # type: ignore[union-attr]
        except (OSError, AttributeError):
            pss_ok = False
            try:
                rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
            except OSError:
                continue
        try:
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return {"rss": rss, "pss": pss if pss_ok else None, "fds": fds}


def tcp_counters(*names: str) -> dict[str, int]:
    """Box-wide TcpExt counters from /proc/net/netstat (e.g. ListenOverflows: connections the accept queue dropped)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], map(int, values.split()[1:]), strict=False))
            return {name: table.get(name, 0) for name in names}
    return dict.fromkeys(names, 0)


def read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def worker_pids(server: Server) -> list[int]:
    """The Sanic worker processes of a server (SANIC_WORKER_NAME=Sanic-Server-... is in each one's environment)."""
    environ = b"SANIC_WORKER_NAME=Sanic-Server-"  # set in the environment of each spawned worker (not the manager)
    group = [pid for pid, st in processes().items() if st[0] == server.proc.pid]
    return [pid for pid in group if environ in read_bytes(f"/proc/{pid}/environ")]


# --- HTTP, ports --------------------------------------------------------------------------------------------------


def http(method: str, url: str, body: object = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the server ---------------------------------------------------------------------------------------------------


class Server:
    """`python -m sanic taxi.app:create_app --factory` in its own session, stopped by signalling its main PID."""

    def __init__(
        self,
        workers: int,
        env: dict[str, str],
        log_dir: Path,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.workers, self.port = workers, free_port()
        self.base, self.log = f"http://127.0.0.1:{self.port}", log_dir / f"server-w{workers}.log"
        app = ["-m", "sanic", "taxi.app:create_app", "--factory", "--host", "127.0.0.1", "--no-motd"]
        cmd = [sys.executable, *app, "--port", str(self.port), "--workers", str(workers)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec_fn,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log}")
            try:
                if http("GET", self.base + "/api/health/")[0] == 200:
                    time.sleep(1.5)  # STACK-NOTES pitfall 12: a SIGTERM right after the first 200 can hang Sanic
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"GET /api/health/ gave no 200 within {timeout:.0f} s; see {self.log}")

    def stop(self) -> int:
        """SIGTERM to the main PID only (pitfall 13); SIGKILL the whole group after 15 s or if anything is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                print(f"  ! the server (workers={self.workers}) ignored SIGTERM for 15 s: SIGKILL to its group")
        if any(st[0] == self.proc.pid for st in processes().values()):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(5)

    def log_problems(self) -> str:
        """A summary of the exceptions and errors in the server's log, empty if there are none."""
        text = self.log.read_text(errors="replace")
        found = collections.Counter(re.findall(r"^([\w.]+(?:Error|Exception|Cancelled|Exit))\b", text, re.M))
        found.update(re.findall(r"^.*\b(ERROR|CRITICAL)\b", text, re.M))
        found.update(re.findall(r"^(Task was destroyed but it is pending)!", text, re.M))
        return ", ".join(f"{n} x {name}" for name, n in found.most_common())

    def log_warnings(self, limit: int = 6) -> str:
        """The WARNING lines of the server's log, grouped by their message with numbers and ids masked."""
        text = self.log.read_text(errors="replace")
        found: collections.Counter[str] = collections.Counter()
        for line in re.findall(r"^.*\bWARNING\b.*$", text, re.M):
            message = re.split(r"\bWARNING\b:?\]?:?\s*", line, maxsplit=1)[-1]
            found[re.sub(r"\b[0-9a-f]{8,}\b|\d+", "#", message)[:160]] += 1
        return "; ".join(f"{n} x {message!r}" for message, n in found.most_common(limit))


def start_profile(server: Server, seconds: float, name: str) -> tuple[subprocess.Popen[bytes], Path] | None:
    """`py-spy record` one worker of ``server`` for ``seconds``; (process, SVG path), or None with a message."""
    if not shutil.which("py-spy"):
        print("  (--profile: py-spy is not installed, no profile; `pip install py-spy` to get one)")
        return None
    if not (pids := worker_pids(server)):
        print("  (--profile: found no worker process, no profile)")
        return None
    PROFILE_DIR.mkdir(exist_ok=True)
    out = PROFILE_DIR / f"profile-{name}-w{server.workers}-{time.strftime('%Y%m%d-%H%M%S')}.svg"
    cmd = ["py-spy", "record", "--pid", str(pids[0]), "--duration", str(max(1, round(seconds))), "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


# --- the throw-away database and Redis prefix ----------------------------------------------------------------------


class BenchDatabase:
    """A database taxi_bench_<hex> migrated with `python -m taxi migrate`, its server environment, and clean-up.

    Use as a context manager: the database is dropped WITH (FORCE) and the Redis keys under its prefix deleted
    on exit, even after a failure or Ctrl-C.
    """

    def __init__(self, log_dir: Path, pool: int, extra_env: dict[str, str] | None = None) -> None:
        import psycopg2

        self.name = f"taxi_bench_{secrets.token_hex(4)}"
        self.dsn = f"{PG_SERVER}/{self.name}"
        self.redis_prefix = f"{self.name}:"
        self.env = (
            os.environ
            | {
                "TAXI_DATABASE_URL": self.dsn,
                "TAXI_REDIS_URL": REDIS_URL,
                "TAXI_REDIS_PREFIX": self.redis_prefix,
                "TAXI_SECRET_KEY": secrets.token_hex(32),
                "TAXI_BCRYPT_ROUNDS": "4",
                "TAXI_DB_POOL_SIZE": str(pool),
                "TAXI_ACCESS_TOKEN_LIFETIME": "3600",
                "TAXI_MEDIA_ROOT": str(log_dir / "media"),
            }
            | (extra_env or {})
        )
        self._admin = psycopg2.connect(f"{PG_SERVER}/postgres")
        self._admin.autocommit = True

    def __enter__(self) -> BenchDatabase:
        try:
            self._admin.cursor().execute(f'CREATE DATABASE "{self.name}"')
            done = subprocess.run(
                [sys.executable, "-m", "taxi", "migrate"],
                cwd=REPO,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode:
                raise RuntimeError(f"python -m taxi migrate failed:\n{done.stdout}{done.stderr}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._admin.cursor().execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self._admin.close()
        finally:
            drop_redis_keys(self.redis_prefix)


def drop_redis_keys(prefix: str) -> None:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        if keys := list(client.scan_iter(match=prefix + "*", count=1000)):
            client.delete(*keys)
    except Exception as exc:  # best effort: keys under a random prefix harm nobody
        print(f"(could not delete the Redis keys {prefix}*: {exc})")
