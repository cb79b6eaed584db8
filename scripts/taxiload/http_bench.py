"""scripts/bench_http: wrk against the HTTP API of a server started the production way; req/s, p50/p99 and CPU per
route and worker count."""

from __future__ import annotations

import argparse
import json
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from taxiload.accounts import make_account
from taxiload.database import ScratchDatabase
from taxiload.harness import ServerProcess, call
from taxiload.proc import CORES, cpu_snapshot
from taxiload.profiler import start_profile
from taxiload.serverlog import log_problems

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
FOOTER = """\
Reference (Django server, 2 workers): list ~50 req/s, p99 ~2 s; detail ~100 req/s, p99 ~1 s.
Targets (2 workers):                  list >= 1000 req/s with p99 < 100 ms; detail >= 2000 req/s.
CPU columns are % of one core; this box has {cores} cores, shared by wrk, the server and PostgreSQL. other% is every
other process on the box: if it is high, the run was disturbed; repeat it.
bound: wrk >= 90% -> client; server >= 80% x workers -> server; idle < 10% -> box CPU; else not CPU (I/O, pool)."""


@dataclass
class Result:
    route: str
    workers: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    server_cpu: float
    pg_cpu: float
    wrk_cpu: float
    other_cpu: float
    idle_pct: float
    vs_bare_pct: float | None = None
    profile: str | None = None

    @property
    def valid(self) -> bool:
        return self.non_2xx == 0 and self.socket_errors == 0 and self.requests > 0

    @property
    def bound(self) -> str:
        if self.wrk_cpu >= 90:
            return "client"
        if self.server_cpu >= 80 * self.workers:
            return "server"
        return "box CPU" if self.idle_pct < 10 else "not CPU"


def parse_wrk(out: str) -> dict[str, Any]:
    """req/s, p50/p99 in ms, request count, non-2xx count and socket errors from `wrk --latency` output."""
    pct = {p: float(v) * UNIT_MS[u] for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    total = re.search(r"^\s*(\d+) requests in", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (rps and total and "50" in pct and "99" in pct):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "p50_ms": pct["50"],
        "p99_ms": pct["99"],
        "requests": int(total.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def run_wrk(url: str, seconds: int, connections: int, token: str | None, pgid: int) -> dict[str, Any]:
    """One wrk run: its parsed output, plus CPU (% of one core) of the server, PostgreSQL, wrk and the rest."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    cmd = ["wrk", *auth, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    kids0, cpu0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_snapshot(pgid), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    kids1, cpu1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_snapshot(pgid), time.monotonic() - t0
    # wrk is the only child reaped during the run, so the children's rusage delta is wrk's own CPU time.
    used = {k: 100 * (cpu1[k] - cpu0[k]) / wall for k in ("server", "pg", "busy")}
    wrk = 100 * (kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime) / wall
    idle = 100 * (1 - (cpu1["busy"] - cpu0["busy"]) / max(cpu1["total"] - cpu0["total"], 1e-9))
    return parse_wrk(out) | {
        "server_cpu": used["server"],
        "pg_cpu": used["pg"],
        "wrk_cpu": wrk,
        "idle_pct": idle,
        "other_cpu": max(used["busy"] - used["server"] - used["pg"] - wrk, 0.0),
    }


def seed(base: str, dsn: str) -> tuple[str, str]:
    """Sign up a rider and a driver, insert 10 trips for the rider; return (rider access token, a trip id)."""
    import psycopg2

    tag = secrets.token_hex(3)
    rider, _ = [make_account(base, f"bench_{group}_{tag}", group, "Bench") for group in ("rider", "driver")]
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:  # the WebSocket that creates trips is not the subject here: plain SQL
        cur.execute(
            "INSERT INTO taxi_trip (id, created, updated, pick_up_address, drop_off_address, status, rider_id, "
            "driver_id) SELECT gen_random_uuid(), t, t, i || ' Pick-up St', i || ' Drop-off Ave', 'REQUESTED', %s, "
            "NULL FROM generate_series(1, 10) AS i, LATERAL (SELECT now() - i * interval '1 minute' AS t) AS c "
            "RETURNING id",
            (rider.id,),
        )
        trip_id = str(cur.fetchall()[0][0])
    conn.close()
    return rider.access, trip_id


def bench(server: ServerProcess, args: argparse.Namespace, token: str, trip_id: str) -> list[Result]:
    routes = [
        ("health", "/api/health/", None),
        ("trip list", "/api/trip/", token),
        ("trip detail", f"/api/trip/{trip_id}/", token),
    ]
    for name, path, tok in routes:  # a route that does not answer 200 would only measure its error path
        status, body = call(server.url + path, token=tok)
        if status != 200 or (name == "trip list" and len(body) != 10):
            print(f"  ! GET {path}: HTTP {status}, {str(body)[:200]}")
    assert server.proc is not None
    results: list[Result] = []
    for name, path, tok in routes:
        run_wrk(server.url + path, args.warmup, args.connections, tok, server.proc.pid)
        spy = start_profile(server, args.duration, "list") if args.profile and name == "trip list" else None
        r = Result(
            name, server.workers, **run_wrk(server.url + path, args.duration, args.connections, tok, server.proc.pid)
        )
        if spy is not None:
            spy[0].wait(30)
            r.profile = str(spy[1]) if spy[1].exists() else None
        r.vs_bare_pct = 100 * r.rps / results[0].rps if results else 100.0
        results.append(r)
        flag = "" if r.valid else f"   <-- INVALID: {r.non_2xx} non-2xx, {r.socket_errors} socket errors"
        print(f"  workers={r.workers} {name:12} {r.rps:8.0f} req/s  p50 {r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms{flag}")
    return results


def print_table(results: list[Result]) -> None:
    print(
        f"{'route':<20} {'workers':>7} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>7} {'server%':>7} "
        f"{'pg%':>4} {'wrk%':>4} {'other%':>6} {'idle%':>5}  bound"
    )
    for r in results:
        route = r.route + ("" if r.valid else " INVALID!")
        print(
            f"{route:<20} {r.workers:>7} {r.rps:>7.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.vs_bare_pct:>6.1f}% "
            f"{r.server_cpu:>7.0f} {r.pg_cpu:>4.0f} {r.wrk_cpu:>4.0f} {r.other_cpu:>6.0f} {r.idle_pct:>5.0f}  {r.bound}"
        )


def parse_args(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unreported warm-up per route (default 3)")
    parser.add_argument("--pool", type=int, default=25, help="TAXI_DB_POOL_SIZE, per worker (default 25)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to PATH as JSON")
    parser.add_argument("--profile", action="store_true", help="py-spy one worker during the list run")
    return parser.parse_args()


def run_all(args: argparse.Namespace, log_dir: Path, warnings: list[str]) -> tuple[list[Result], bool]:
    """One server per worker count on one throw-away database; the results, and whether a server failed to stop
    cleanly (invalid runs are counted apart)."""
    results: list[Result] = []
    failed = False
    env = {"TAXI_DB_POOL_SIZE": str(args.pool), "TAXI_ACCESS_TOKEN_LIFETIME": "3600"}
    with ScratchDatabase("bench", log_dir, env) as db:  # dropped, with its Redis keys, even after a failure or Ctrl-C
        token = trip_id = ""
        for n in [int(w) for w in args.workers.split(",") if w.strip()]:
            print(f"workers={n}: starting the server (log: {log_dir / f'server-w{n}.log'})")
            server = ServerProcess(db.env, n, log=log_dir / f"server-w{n}.log")
            try:
                server.start()
                if not token:
                    token, trip_id = seed(server.url, db.dsn)
                results += bench(server, args, token, trip_id)
            finally:
                if (code := server.stop()) != 0:
                    failed = True
                    warnings.append(f"the server (workers={n}) exited with {code}, not 0; see {server.log}")
            if found := log_problems(server.output()):
                warnings.append(f"the server (workers={n}) logged {found}; see {server.log}")
    return results, failed


def report(args: argparse.Namespace, results: list[Result], warnings: list[str]) -> None:
    print()
    print_table(results)
    print()
    print(FOOTER.format(cores=CORES))
    if args.json:
        rows = [asdict(r) | {"valid": r.valid, "bound": r.bound} for r in results]
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "cores": CORES, "results": rows}, indent=2)
            + "\n"
        )
    for r in results:
        if r.profile:
            print(f"profile of {r.route}, workers={r.workers}: {r.profile}")
        if not r.valid:
            warnings.append(
                f"{r.route}, workers={r.workers}: {r.non_2xx} non-2xx responses and {r.socket_errors} "
                f"socket errors; these numbers are NOT valid"
            )
    for w in warnings:
        print(f"!!! {w}")


def main(doc: str) -> int:
    args = parse_args(doc)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below on SIGTERM too
    if not shutil.which("wrk"):
        print("bench_http: wrk is not installed; install it with: apt-get install -y wrk", file=sys.stderr)
        return 2
    log_dir = Path(tempfile.mkdtemp(prefix="taxi-bench-"))
    warnings: list[str] = []
    results, failed = run_all(args, log_dir, warnings)
    report(args, results, warnings)
    if not warnings:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 1 if failed or not all(r.valid for r in results) else 0


def cli(doc: str) -> None:
    """The command: exit with main()'s status; Ctrl-C after the clean-up."""
    try:
        sys.exit(main(doc))
    except KeyboardInterrupt:
        sys.exit("bench_http: interrupted (the database and the server were cleaned up)")
