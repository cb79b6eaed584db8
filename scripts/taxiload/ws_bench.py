"""scripts/bench_ws: the /taxi/ WebSocket under load, on a server started the production way, per scenario
(broadcast, lifecycle, connections) and worker count."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from taxiload import ws_broadcast, ws_city, ws_idle, ws_lifecycle
from taxiload.accounts import Account, make_accounts
from taxiload.database import ScratchDatabase
from taxiload.harness import ServerProcess
from taxiload.proc import CORES, quiet_box, raise_nofile
from taxiload.serverlog import log_problems, log_warnings
from taxiload.ws_client import CLIENT
from taxiload.ws_common import LIMIT_HINT, LIMITS, SCENARIOS, Bench, Row
from taxiload.ws_report import FOOTER, print_tables, show


def parse_args(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument(
        "--scenario",
        default="broadcast,lifecycle,connections",
        help="comma-separated scenarios of " + ",".join(SCENARIOS),
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds of each timed run (default 10)")
    parser.add_argument("--drivers", type=int, default=1000, help="broadcast: driver sockets (default 1000)")
    parser.add_argument("--riders", type=int, default=4, help="broadcast: rider sockets creating trips (default 4)")
    parser.add_argument("--rate", type=float, default=60, help="broadcast: trips/s from all riders (default 60)")
    parser.add_argument("--pairs", default="20", help="lifecycle: rider/driver pairs, comma-separated (default 20)")
    parser.add_argument("--sockets", type=int, default=10000, help="connections: idle sockets (default 10000)")
    parser.add_argument("--hold", type=float, default=5, help="connections: seconds to hold them idle (default 5)")
    parser.add_argument("--concurrency", type=int, default=200, help="sockets being opened at once (default 200)")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes for the sockets (default 1)")
    parser.add_argument("--driver-accounts", type=int, default=10, help="driver accounts shared by the sockets")
    parser.add_argument("--pool", type=int, default=20, help="TAXI_DB_POOL_SIZE, per worker (default 20)")
    parser.add_argument("--city-drivers", type=int, default=10000, help="city: driver sockets (default 10000)")
    parser.add_argument("--city-rate", type=float, default=20, help="city: trip requests/s (default 20)")
    parser.add_argument("--radius", type=int, default=5000, help="city: TAXI_DISPATCH_RADIUS_M (default 5000)")
    parser.add_argument(
        "--city-rules",
        default="nearby,old",
        help="city: the runs, in order, on the same sockets: nearby (dispatch by pick-up point), old (every driver"
        " hears every request); comma-separated, a rule may repeat (default nearby,old)",
    )
    parser.add_argument(
        "--launcher",
        choices=("sanic", "taxi"),
        default="sanic",
        help="start the server with Sanic's CLI (listen backlog 100) or `taxi serve` (TAXI_BACKLOG) (default sanic)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to PATH as JSON")
    parser.add_argument("--profile", action="store_true", help="py-spy one worker during the broadcast run")
    args = parser.parse_args()
    args.worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    args.scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    args.pair_counts = [int(p) for p in args.pairs.split(",") if p.strip()]
    args.city_runs = [r.strip() for r in args.city_rules.split(",") if r.strip()]
    if bad := [r for r in args.city_runs if r not in ("nearby", "old")]:
        parser.error(f"unknown city rule {', '.join(bad)}; expected nearby or old")
    if unknown := set(args.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}; expected some of {', '.join(SCENARIOS)}")
    return args


def ready_to_run(args: argparse.Namespace) -> bool:
    """Raise the open-file limit and check it; warn about the websockets fallback and a busy box."""
    raise_nofile()
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if "connections" in args.scenarios and limit < args.sockets / max(args.client_procs, 1) + 500:
        print(
            f"bench_ws: the open-file limit is {limit}; {args.sockets} sockets need more (ulimit -Hn)", file=sys.stderr
        )
        return False
    if CLIENT != "picows":
        print(
            "!!! bench_ws: picows is not available: falling back to the websockets library, which is several times\n"
            "!!! slower, so the client may bound the figures. Install it: .venv/bin/pip install -r requirements-bench.txt"
        )
    if (busy := quiet_box()) > 20:
        print(f"!!! the box is busy before the run ({busy:.0f}% of a core): the figures will be disturbed")
    return True


def run_scenarios(bench: Bench, args: argparse.Namespace, rows: list[Row]) -> None:
    for scenario in args.scenarios:
        for size in args.pair_counts if scenario == "lifecycle" else [0]:
            print(f"  {scenario}" + (f" ({size} pairs)" if size else ""))
            if scenario == "city":
                found = ws_city.run(bench)
            elif scenario == "lifecycle":
                found = [ws_lifecycle.run(bench, size)]
            else:
                found = [ws_broadcast.run(bench) if scenario == "broadcast" else ws_idle.run(bench)]
            for row in found:
                rows.append(row)
                show(row)


def run_all(args: argparse.Namespace, log_dir: Path, rows: list[Row], profiles: list[str], warnings: list[str]) -> bool:
    """Every scenario on one server per worker count; False if a server did not stop cleanly."""
    ok = True
    env = {
        "TAXI_DB_POOL_SIZE": str(args.pool),
        "TAXI_ACCESS_TOKEN_LIFETIME": "3600",
        "TAXI_DISPATCH_RADIUS_M": str(args.radius),
        "TAXI_BCRYPT_ROUNDS": "4",  # thousands of bench accounts: their passwords are not what is measured
    } | dict.fromkeys(LIMITS, "1000000")
    with ScratchDatabase("bench", log_dir, env) as db:  # dropped, with its Redis keys, even after a failure or Ctrl-C
        drivers: list[Account] = []
        for n in args.worker_counts:
            print(f"workers={n}: starting the server (log: {log_dir / f'server-w{n}.log'})")
            log = log_dir / f"server-w{n}.log"
            server = ServerProcess(db.env, n, log=log, preexec_fn=raise_nofile, launcher=args.launcher)
            try:
                server.start()
                if not drivers:
                    drivers = make_accounts(server.url, "driver", args.driver_accounts, "Bench", LIMIT_HINT)
                bench = Bench(server, args, drivers, db.name)
                run_scenarios(bench, args, rows)
                if bench.profile:
                    profiles.append(bench.profile)
            finally:
                if (code := server.stop()) != 0:
                    ok = False
                    warnings.append(f"the server (workers={n}) exited with {code}, not 0; see {server.log}")
            if found := log_problems(server.output()):
                warnings.append(f"the server (workers={n}) logged {found}; see {server.log}")
            if found := log_warnings(server.output()):
                warnings.append(f"the server (workers={n}) logged warnings: {found}; see {server.log}")
    return ok


def report(args: argparse.Namespace, rows: list[Row], profiles: list[str], warnings: list[str]) -> None:
    print()
    print_tables(rows)
    print(FOOTER.format(cores=CORES, client=CLIENT))
    if args.json:
        out = [asdict(r) | {"valid": r.valid, "bound": r.bound} for r in rows]
        given = {k: v for k, v in vars(args).items() if k not in ("worker_counts", "scenarios", "pair_counts")}
        meta = {"args": given | {"json": str(args.json)}, "cores": CORES, "client": CLIENT}
        args.json.write_text(json.dumps(meta | {"results": out}, indent=2) + "\n")
    for path in profiles:
        print(f"profile of a worker during the broadcast run: {path}")
    for r in rows:
        for problem in r.problems:
            warnings.append(f"{r.scenario} (workers={r.workers}, size {r.size}): {problem}")
    for w in warnings:
        print(f"!!! {w}")


def main(doc: str) -> int:
    args = parse_args(doc)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below on SIGTERM too
    if not ready_to_run(args):
        return 2
    log_dir = Path(tempfile.mkdtemp(prefix="taxi-bench-"))
    rows: list[Row] = []
    profiles: list[str] = []
    warnings: list[str] = []
    ok = run_all(args, log_dir, rows, profiles, warnings)
    report(args, rows, profiles, warnings)
    if not warnings:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 1 if not ok or not all(r.valid for r in rows) else 0


def cli(doc: str) -> None:
    """The command: exit with main()'s status; Ctrl-C after the clean-up."""
    try:
        sys.exit(main(doc))
    except KeyboardInterrupt:
        sys.exit("bench_ws: interrupted (the database and the server were cleaned up)")
