"""scripts/soak: set up the server (on private PostgreSQL and Redis with --faults), run the load, check, report, and
clean up whatever happens. Exit status: 0 SOAK PASS, 1 SOAK FAIL, 2 SOAK NOT RUN, 130 interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import tempfile
import traceback
from pathlib import Path
from typing import Any

import redis

from taxiload.accounts import Account, make_account
from taxiload.database import PG_SERVER, REDIS_URL, ScratchDatabase
from taxiload.harness import PrivatePostgres, PrivateRedis, ServerProcess, SetupError, worker_pids
from taxiload.serverlog import SOAK_MASKS, log_noise, log_problems, log_warnings
from taxiload.soak_model import HARD_EXTRA, mono
from taxiload.soak_report import report
from taxiload.soak_run import Soak
from taxiload.soak_verdict import check_database, deliveries, finish_faults


def interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def services(
    args: argparse.Namespace, stack: contextlib.ExitStack, log_dir: Path
) -> tuple[str, str, tuple[PrivatePostgres, PrivateRedis] | None]:
    """(PostgreSQL server URL, Redis URL, the private instances): the machine's, or private ones with --faults."""
    if not args.faults:
        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            raise SetupError(f"Redis is not reachable at {REDIS_URL}: {exc}") from None
        return PG_SERVER, REDIS_URL, None
    try:
        pg = PrivatePostgres(prefix="taxi-soak-pg-")
        stack.callback(pg.remove)
        pg.start()
        rd = PrivateRedis(log_dir)
    except SetupError as exc:
        raise SetupError(f"--faults: {exc}") from None
    stack.callback(rd.stop)
    rd.start()
    print(f"private PostgreSQL on port {pg.port} ({pg.dir}), private Redis on port {rd.port}")
    return pg.server, rd.url, (pg, rd)


def start_server(
    args: argparse.Namespace, stack: contextlib.ExitStack, log_dir: Path
) -> tuple[ServerProcess, ScratchDatabase, tuple[PrivatePostgres, PrivateRedis] | None]:
    pg_server, redis_url, private = services(args, stack, log_dir)
    env = {
        "TAXI_ACCESS_TOKEN_LIFETIME": str(int(args.minutes * 60 + HARD_EXTRA + 900)),
        "TAXI_LOGIN_ATTEMPTS_PER_ADDRESS": "1000000",
        "TAXI_LOGIN_ATTEMPTS_PER_USER": "1000000",
        "TAXI_SIGNUPS_PER_ADDRESS": "1000000",  # every account signs up from 127.0.0.1
        "TAXI_MAX_OPEN_TRIPS_PER_RIDER": "1000000",  # soak riders request without waiting for their trips to end
    }
    db = ScratchDatabase("soak", log_dir, env, pg_server, redis_url, drop_keys=not args.faults)
    stack.enter_context(db)
    server = ServerProcess(db.env, args.workers, log=log_dir / f"server-w{args.workers}.log")
    stack.callback(server.stop)
    server.start(60)
    assert server.proc is not None
    workers = worker_pids(server.proc.pid)
    print(f"server: {server.url}, {args.workers} workers {workers}, database {db.name}, Redis prefix {db.redis_prefix}")
    return server, db, private


def run(args: argparse.Namespace, stack: contextlib.ExitStack, log_dir: Path) -> dict[str, Any]:
    server, db, private = start_server(args, stack, log_dir)
    accounts: dict[str, list[Account]] = {
        "rider": [make_account(server.url, f"soak_rider_{i}", "rider", "Soak") for i in range(args.pairs)],
        "driver": [make_account(server.url, f"soak_driver_{i}", "driver", "Soak") for i in range(args.pairs)],
        "watcher": [make_account(server.url, f"soak_watcher_{i}", "driver", "Soak") for i in range(args.watchers)],
    }
    if args.disconnects:
        accounts["phone"] = [
            make_account(server.url, f"soak_phone_{group}_{i}", group, "Phone")
            for i in range(args.pairs)
            for group in ("rider", "driver")
        ]
    soak = Soak(args, server, accounts, private, db.dsn)
    try:
        asyncio.run(soak.main())
    except asyncio.CancelledError:  # SIGTERM during the load cancels the main task
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, interrupt)  # the loop's handler is gone: clean up on SIGTERM as before
    finish_faults(soak)
    db_check = check_database(soak, db.dsn)
    delivered = deliveries(soak)
    assert server.proc is not None
    workers_end = worker_pids(server.proc.pid)
    started = mono()
    code = server.stop()
    log = server.output()
    return {
        "soak": soak,
        "db": db_check,
        "deliveries": delivered,
        "workers_end": workers_end,
        "stop": f"server stopped by SIGTERM with exit code {code} in {mono() - started:.1f} s",
        "stop_code": code,
        "redis_channels": soak.redis_channels,
        "phones": soak.phone_verdict,
        "log_problems": log_problems(log),
        "log_noise": log_noise(log),
        "log_warnings": log_warnings(log, limit=12, width=150, masks=SOAK_MASKS),
        "log_tracebacks": log.count("Traceback"),
        "log": str(server.log),
    }


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--minutes", type=float, required=True, help="how long the load runs")
    parser.add_argument("--faults", action="store_true", help="private PostgreSQL and Redis, restarted mid-run")
    parser.add_argument("--pairs", type=int, default=10, help="rider/driver pairs (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="Sanic workers (default 2)")
    parser.add_argument("--watchers", type=int, default=5, help="driver sockets that only listen (default 5)")
    parser.add_argument("--think", type=float, default=0.2, help="mean pause between a pair's steps, s (default 0.2)")
    parser.add_argument(
        "--disconnects", action="store_true", help="phones (protocol 2) dropped at random moments that resume"
    )
    parser.add_argument("--drop-every", type=float, default=2.0, help="mean time between two drops, s (default 2)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    if args.minutes <= 0 or args.pairs < 1 or args.workers < 1 or args.watchers < 0 or args.think < 0:
        parser.error("--minutes must be > 0, --pairs and --workers >= 1, --watchers and --think >= 0")
    if args.faults and args.workers < 2:
        parser.error("--faults kills one worker: it needs --workers 2 or more")
    if args.faults and args.minutes < 0.5:
        parser.error("--faults needs --minutes 0.5 or more (three faults, each with a few seconds of recovery)")
    return args


def main(doc: str) -> int:
    args = parse_args(doc.split("\n\n")[0])
    signal.signal(signal.SIGTERM, interrupt)  # clean up on SIGTERM as on Ctrl-C
    log_dir = Path(tempfile.mkdtemp(prefix="taxi-soak-"))
    keep_logs = True
    verdict, status = "", 2
    stack = contextlib.ExitStack()
    try:
        results = run(args, stack, log_dir)
        status, verdict, data = report(args, results)
        keep_logs = status != 0 or bool(results["log_tracebacks"])
        if args.json:
            args.json.write_text(json.dumps(data, indent=2) + "\n")
    except KeyboardInterrupt:
        verdict, status = "SOAK INTERRUPTED: cleaned up; no verdict", 130
    except SetupError as exc:
        verdict = f"SOAK NOT RUN: {exc}"
    except Exception as exc:
        traceback.print_exc()
        verdict, status = f"SOAK FAIL: the run broke off: {exc!r}", 1
    finally:
        # Clean-up must finish: ignore further Ctrl-C/SIGTERM (every step in it is bounded).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.close()
        except Exception as exc:
            print(f"clean-up: {exc!r}")
        if keep_logs:
            print(f"logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    print(verdict)
    return status
