"""``scripts/stop_cycles``: the issue's stop test at full size (30 random-delay cycles for each signal, target and
combination of database and broker), and how fast a SIGKILLed worker is replaced. Prints one line per combination,
a verdict, and exits 1 when any cycle hung, exited non-zero, took over 5 s or left a process behind."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from taxiload.database import ScratchDatabase
from taxiload.harness import ServerProcess, call, worker_pids
from taxiload.stopcycle import REQUIRED, Cycle, run_cycle, sign_up_token

COMBINATIONS = {  # name: (database, broker, workers); the in-process broker serves one worker only
    "sqlite-local-1": ("sqlite", "local", 1),
    "sqlite-redis-2": ("sqlite", "redis", 2),
    "postgresql-local-1": ("postgresql", "local", 1),
    "postgresql-redis-2": ("postgresql", "redis", 2),
}


def _env(stack: ExitStack, database: str, broker: str, tmp: Path) -> dict[str, str]:
    if database == "postgresql":
        scratch = stack.enter_context(ScratchDatabase("stopcycles", tmp))
        env = {k: v for k, v in scratch.env.items() if k.startswith("TAXI_")}
    else:
        env = {
            "TAXI_DATABASE_URL": f"sqlite:///{tmp}/{database}-{broker}.sqlite3",
            "TAXI_REDIS_PREFIX": f"taxi_stopcycles_{os.getpid()}_{time.monotonic_ns()}:",
            "TAXI_BCRYPT_ROUNDS": "4",
            "TAXI_MEDIA_ROOT": str(tmp / "media"),
            "TAXI_SECRET_KEY": "stop-cycles-" + "k" * 40,
        }
        if broker == "redis":
            env["TAXI_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    if broker == "local":
        env["TAXI_REDIS_URL"] = ""
    env["TAXI_ACCESS_TOKEN_LIFETIME"] = "86400"  # the cycles' socket uses one token for the whole run
    return env


def _combination(name: str, args: argparse.Namespace, rng: random.Random, tmp: Path) -> list[Cycle]:
    database, broker, workers = COMBINATIONS[name]
    with ExitStack() as stack:
        env = _env(stack, database, broker, tmp)
        token = sign_up_token(env, workers)
        plan = [
            (signum, target, rng.uniform(args.min_delay, args.max_delay))
            for signum in (signal.SIGINT, signal.SIGTERM)
            for target in ("main", "group")
            for _ in range(args.cycles)
        ]
        with ThreadPoolExecutor(args.parallel) as pool:
            return list(pool.map(lambda p: run_cycle(env, workers, p[0], p[1], p[2], token=token), plan))


def _report(name: str, cycles: list[Cycle], failures: Path) -> dict[str, Any]:
    bad = [c for c in cycles if not c.ok]
    noisy = [c for c in cycles if c.served and "Traceback" in c.output]
    for i, cycle in enumerate(bad + noisy):
        (failures / f"{name}-{i}-{cycle.signal}-{cycle.target}.log").write_text(cycle.output)
    times = [c.stop_seconds for c in cycles]
    summary = {
        "combination": name,
        "cycles": len(cycles),
        "failed": len(bad),
        "hung": sum(c.exit_code is None for c in cycles),
        "nonzero_exit": sum(c.exit_code not in (0, None) for c in cycles),
        "leftovers": sum(c.leftovers > 0 for c in cycles),
        "tracebacks_while_serving": len(noisy),
        "stop_median_s": round(statistics.median(times), 3),
        "stop_max_s": round(max(times), 3),
        "signalled_during_startup": sum(not c.served for c in cycles),
    }
    print(
        f"{name:20} {summary['cycles']:4} cycles  failed {summary['failed']:3}  hung {summary['hung']}  "
        f"exit!=0 {summary['nonzero_exit']}  leftovers {summary['leftovers']}  "
        f"stop median {summary['stop_median_s']:.2f} s max {summary['stop_max_s']:.2f} s  "
        f"(during start-up: {summary['signalled_during_startup']})",
        flush=True,
    )
    return summary


def measure_replacement(kills: int, tmp: Path) -> dict[str, Any]:
    """SIGKILL a worker of a 2-worker PostgreSQL + Redis server ``kills`` times; time until its replacement runs
    and until it reports ready."""
    running, ready = [], []
    with ScratchDatabase("replace", tmp) as scratch:
        env = {k: v for k, v in scratch.env.items() if k.startswith("TAXI_")}
        with ServerProcess(env, workers=2, launch=True) as server:
            assert server.proc is not None
            for _ in range(kills):
                before = worker_pids(server.proc.pid)
                victim = before[0]
                os.kill(victim, signal.SIGKILL)
                killed = time.monotonic()
                new = None
                while time.monotonic() - killed < 30:
                    now = worker_pids(server.proc.pid)
                    if len(now) == 2 and victim not in now:
                        new = (set(now) - set(before)).pop()
                        running.append(time.monotonic() - killed)
                        break
                    time.sleep(0.01)
                while new is not None and time.monotonic() - killed < 30:
                    if f"Worker ready [{new}]" in server.output():
                        ready.append(time.monotonic() - killed)
                        break
                    time.sleep(0.01)
                time.sleep(1.5)
                assert call(f"{server.url}/api/health/")[0] == 200
    result = {
        "kills": kills,
        "replaced": len(running),
        "running_max_s": round(max(running), 3) if running else None,
        "running_median_s": round(statistics.median(running), 3) if running else None,
        "ready_max_s": round(max(ready), 3) if ready else None,
        "ready_median_s": round(statistics.median(ready), 3) if ready else None,
    }
    print(
        f"worker replacement: {result['replaced']}/{kills} replaced; new process running after "
        f"median {result['running_median_s']} s, max {result['running_max_s']} s; ready (serving) after median "
        f"{result['ready_median_s']} s, max {result['ready_max_s']} s",
        flush=True,
    )
    return result


def main(doc: str) -> int:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=30, help="cycles per signal and target (default 30)")
    parser.add_argument("--combinations", default=",".join(COMBINATIONS), help="comma-separated, default: all")
    parser.add_argument("--min-delay", type=float, default=1.0, help="earliest signal, seconds after start")
    parser.add_argument("--max-delay", type=float, default=10.0, help="latest signal, seconds after start")
    parser.add_argument("--parallel", type=int, default=4, help="servers started and stopped at once")
    parser.add_argument("--kills", type=int, default=10, help="worker SIGKILLs to time (0: none)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    names = [n.strip() for n in args.combinations.split(",") if n.strip()]
    if unknown := [n for n in names if n not in COMBINATIONS]:
        parser.error(f"unknown combination {unknown[0]!r}: expected some of {', '.join(COMBINATIONS)}")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    failures = Path(tempfile.mkdtemp(prefix="taxi-stop-cycles-"))
    print(
        f"seed {seed}; {args.cycles} cycles per signal and target; delays {args.min_delay}-{args.max_delay} s; "
        f"{args.parallel} at once; logs of failed cycles in {failures}",
        flush=True,
    )
    started = time.monotonic()
    summaries = []
    with tempfile.TemporaryDirectory(prefix="taxi-stop-cycles-") as tmp:
        for name in names:
            summaries.append(_report(name, _combination(name, args, rng, Path(tmp)), failures))
        replacement = measure_replacement(args.kills, Path(tmp)) if args.kills else None
    failed = sum(s["failed"] for s in summaries)
    worst = max((s["stop_max_s"] for s in summaries), default=0.0)
    replaced_ok = replacement is None or replacement["replaced"] == args.kills
    verdict = "STOP CYCLES PASS" if not failed and replaced_ok else "STOP CYCLES FAIL"
    print(
        f"{verdict}: {sum(s['cycles'] for s in summaries)} cycles, {failed} failed (requirement: exit 0 within "
        f"{REQUIRED:.0f} s, nothing left), slowest stop {worst:.2f} s; {time.monotonic() - started:.0f} s in all"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"seed": seed, "combinations": summaries, "replacement": replacement}, indent=2)
        )
    return 0 if verdict.endswith("PASS") else 1
