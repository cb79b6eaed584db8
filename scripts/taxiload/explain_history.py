"""scripts/explain_history: the plans and timings of the trip list statements on a history of 100,000 trips."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taxiload.database import ScratchDatabase
from taxiload.harness import REPO

PAGE = 100  # TAXI_TRIP_LIST_DEFAULT; the server reads one row more to know whether an older page exists
OTHERS = 100  # background riders and drivers
OPEN_REQUESTS = 2000
HERE = (52.52, 13.405, 5000.0)  # the driver's position and reach (Berlin): some located requests are near
KEY_LINES = ("Limit", "Index", "Sort", "Append", "Merge", "Filter", "Cond", "One-Time", "Rows Removed", "Heap")
START = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "f" * 32)  # taxi.paging.START


@dataclass
class Case:
    title: str
    role: str
    status: str | None
    before: tuple[Any, str]


def _fill(cur: Any, trips: int) -> tuple[int, int]:
    """The rider and driver with ``trips`` trips each, as many of other users, and the open requests."""

    def user(name: str, role: str) -> int:
        cur.execute(
            "INSERT INTO taxi_user (username, password, role, date_joined) VALUES (%s, 'x', %s, now()) RETURNING id",
            (name, role),
        )
        return int(cur.fetchone()[0])

    rider, driver = user("history-rider", "rider"), user("history-driver", "driver")
    riders = [user(f"rider-{n}", "rider") for n in range(OTHERS)]
    drivers = [user(f"driver-{n}", "driver") for n in range(OTHERS)]
    insert = (
        "INSERT INTO taxi_trip (id, created, updated, pick_up_address, drop_off_address, status, rider_id, driver_id, "
        "pick_up_lat, pick_up_lng) SELECT gen_random_uuid(), now() - g * interval '{step}', now(), 'A', 'B', {status}, "
        "{rider}, {driver}, {lat}, {lng} FROM generate_series(1, %s) g"
    )
    # Each history: one active trip (the newest), every other one COMPLETED, a trip a minute going back 70 days.
    active = "CASE WHEN g = 1 THEN '{}' ELSE 'COMPLETED' END"
    pick = "(%s::bigint[])[1 + g %% " + str(OTHERS) + "]"
    cur.execute(
        insert.format(
            step="1 minute", status=active.format("IN_PROGRESS"), rider="%s", driver=pick, lat="NULL", lng="NULL"
        ),
        (rider, drivers, trips),
    )
    cur.execute(
        insert.format(
            step="1 minute", status=active.format("STARTED"), rider=pick, driver="%s", lat="NULL", lng="NULL"
        ),
        (riders, driver, trips),
    )
    others = pick.replace("g %%", "(g * 7) %%")
    cur.execute(
        insert.format(step="1 minute", status="'COMPLETED'", rider=pick, driver=others, lat="NULL", lng="NULL"),
        (riders, drivers, trips),
    )
    # Open requests of the last half hour: half name no place, half are within about 50 km of the driver.
    located = "CASE WHEN g %% 2 = 0 THEN {} END"
    cur.execute(
        insert.format(
            step="1 second",
            status="'REQUESTED'",
            rider=pick,
            driver="NULL",
            lat=located.format("52.52 + (random() - 0.5) * 0.9"),
            lng=located.format("13.405 + (random() - 0.5) * 1.4"),
        ),
        (riders, OPEN_REQUESTS),
    )
    return rider, driver


def _place(cur: Any, role: str, user: int, status: str | None, depth: float) -> tuple[Any, str]:
    """The (created, id) of the trip ``depth`` of the way down the user's own history (the cursor of that page)."""
    column = "rider_id" if role == "rider" else "driver_id"
    where = f"{column} = %s" + (" AND status = %s" if status else "")
    cur.execute(f"SELECT count(*) FROM taxi_trip WHERE {where}", (user, status) if status else (user,))
    offset = int(cur.fetchone()[0] * depth)
    cur.execute(
        f"SELECT created, id::text FROM taxi_trip WHERE {where} ORDER BY created DESC, id DESC OFFSET %s LIMIT 1",
        (user, status, offset) if status else (user, offset),
    )
    created, trip_id = cur.fetchone()
    return created, uuid.UUID(trip_id).hex


def _values(order: tuple[str, ...], user: int, case: Case) -> tuple[Any, ...]:
    lat, lng, radius = HERE if case.role == "driver" else (None, None, 0.0)
    named = {
        "me": user,
        "limit": PAGE + 1,
        "lat": lat,
        "lng": lng,
        "radius": radius,
        "status": case.status,
        "before_created": case.before[0],
        "before_id": case.before[1],
    }
    return tuple(named[name] for name in order)


def _explain(cur: Any, name: str, values: tuple[Any, ...], runs: int, full: bool) -> list[str]:
    markers = ", ".join(["%s"] * len(values))
    cur.execute(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE {name} ({markers})", values)
    plan = [row[0] for row in cur.fetchall()]
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        cur.execute(f"EXECUTE {name} ({markers})", values)
        rows = cur.fetchall()
        timings.append((time.perf_counter() - began) * 1000)
    shown = plan if full else [line for line in plan if any(key in line for key in KEY_LINES)]
    summary = [line.strip() for line in plan if line.startswith(("Planning Time", "Execution Time"))]
    return [
        *shown,
        f"  => {len(rows)} rows; {'; '.join(summary)}; "
        f"client median of {runs}: {statistics.median(timings):.2f} ms (max {max(timings):.2f} ms)",
    ]


def _run_case(cur: Any, user: int, case: Case, runs: int, full: bool, tag: str) -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the statements are the server's own, not copies
    from taxi.queries.trips import list_statement_postgresql

    sql, order = list_statement_postgresql(case.role, case.status is not None)
    values = _values(order, user, case)
    print(f"\n### {case.title}")
    for mode in ("force_custom_plan", "force_generic_plan"):
        name = f"explain_{tag}_{mode}"
        cur.execute(f"SET plan_cache_mode = {mode}")
        cur.execute(f"PREPARE {name} AS {sql}")
        print(f"-- {mode.replace('force_', '').replace('_', ' ')}:")
        for line in _explain(cur, name, values, runs, full):
            print(line)
        cur.execute(f"DEALLOCATE {name}")
    cur.execute("RESET plan_cache_mode")


def _cases(cur: Any, rider: int, driver: int) -> list[tuple[int, Case]]:
    cases = []
    # The rider has no STARTED trip: without a status index, finding that out reads its whole history. The driver's
    # REQUESTED are the open requests it could accept (the other half of its list).
    for role, user, rare in (("rider", rider, "STARTED"), ("driver", driver, "REQUESTED")):
        deep = _place(cur, role, user, None, 0.9)
        deep_done = _place(cur, role, user, "COMPLETED", 0.9)
        cases += [
            (user, Case(f"{role}: first page, all statuses", role, None, START)),
            (user, Case(f"{role}: a page 90% deep, all statuses", role, None, deep)),
            (user, Case(f"{role}: ?status=COMPLETED, a page 90% deep", role, "COMPLETED", deep_done)),
            (user, Case(f"{role}: ?status={rare}, first page", role, rare, START)),
        ]
    return cases


def _without(cur: Any, index: str, user: int, case: Case, runs: int, full: bool, tag: str) -> None:
    """A case again with ``index`` dropped in a transaction that is rolled back."""
    cur.execute("BEGIN")
    try:
        cur.execute(f"DROP INDEX {index}")
        case.title = f"WITHOUT {index}: {case.title}"
        _run_case(cur, user, case, runs, full, tag)
    finally:
        cur.execute("ROLLBACK")


_STATUS_INDEXES = ("taxi_trip_rider_status_created", "taxi_trip_driver_status_created")


def _write_cost(cur: Any, rider: int, driver: int, trips: int, drop: tuple[str, ...]) -> tuple[float, float]:
    """Milliseconds to insert ``trips`` trips and then move each along one status (as a trip's life does three
    times), in a transaction rolled back, with the indexes ``drop`` dropped first."""
    cur.execute("BEGIN")
    try:
        for index in drop:
            cur.execute(f"DROP INDEX {index}")
        began = time.perf_counter()
        cur.execute(
            "INSERT INTO taxi_trip (id, created, updated, pick_up_address, drop_off_address, status, rider_id) "
            "SELECT gen_random_uuid(), now() + g * interval '1 ms', now(), 'A', 'B', 'REQUESTED', %s "
            "FROM generate_series(1, %s) g",
            (rider, trips),
        )
        inserted = time.perf_counter()
        cur.execute(
            "UPDATE taxi_trip SET status = 'STARTED', driver_id = %s, updated = now() "
            "WHERE rider_id = %s AND status = 'REQUESTED'",
            (driver, rider),
        )
        done = time.perf_counter()
    finally:
        cur.execute("ROLLBACK")
    return (inserted - began) * 1000, (done - inserted) * 1000


def cli(doc: str | None) -> None:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trips", type=int, default=100_000, help="trips of the rider, and of the driver")
    parser.add_argument("--runs", type=int, default=20, help="client-side executions timed per plan")
    parser.add_argument("--full", action="store_true", help="print whole plans, not only their key lines")
    args = parser.parse_args()
    import psycopg2

    with tempfile.TemporaryDirectory() as tmp, ScratchDatabase("explain", Path(tmp), drop_keys=False) as scratch:
        conn = psycopg2.connect(scratch.dsn)
        conn.autocommit = True
        try:
            cur = conn.cursor()
            began = time.perf_counter()
            rider, driver = _fill(cur, args.trips)
            cur.execute("VACUUM ANALYZE taxi_trip")
            cur.execute("SELECT count(*), pg_size_pretty(pg_total_relation_size('taxi_trip')) FROM taxi_trip")
            count, size = cur.fetchone()
            cur.execute("SELECT version()")
            print(
                f"{cur.fetchone()[0]}\n{count} trips ({size} with indexes) in {scratch.name}, stored in "
                f"{time.perf_counter() - began:.1f} s; page size {PAGE} (+1 row to know whether an older page exists)"
            )
            cases = _cases(cur, rider, driver)
            for n, (user, case) in enumerate(cases):
                _run_case(cur, user, case, args.runs, args.full, str(n))
            print("\n## What migration 5's indexes avoid (each dropped in a rolled-back transaction)")
            rider_cases = {case.title: (user, case) for user, case in cases if case.role == "rider"}
            user, case = rider_cases["rider: ?status=STARTED, first page"]
            _without(cur, "taxi_trip_rider_status_created", user, case, args.runs, args.full, "a")
            user, case = rider_cases["rider: first page, all statuses"]
            _without(cur, "taxi_trip_rider_created", user, case, args.runs, args.full, "b")
            writes, rounds = 20_000, 5
            print(f"\n## What the two status indexes cost: {writes} new trips, then each accepted (rolled back)")
            costs: dict[str, list[tuple[float, float]]] = {"with them": [], "without them": []}
            for _ in range(rounds):  # alternating, so a busy moment of the machine hurts both
                costs["with them"].append(_write_cost(cur, rider, driver, writes, ()))
                costs["without them"].append(_write_cost(cur, rider, driver, writes, _STATUS_INDEXES))
            for label, runs in costs.items():
                inserts, accepts = sorted(r[0] for r in runs), sorted(r[1] for r in runs)
                print(
                    f"{label:13} insert: best {inserts[0]:.0f} ms, median {statistics.median(inserts):.0f} ms; "
                    f"accept: best {accepts[0]:.0f} ms, median {statistics.median(accepts):.0f} ms ({rounds} rounds)"
                )
        finally:
            conn.close()
