"""bench_ws's city scenario: D driver sockets (protocol 2) spread over a 30 x 30 km square, each sending a fix every
4 s, riders requesting trips at random pick-up points at a fixed rate, drivers accepting, driving (a fix a second)
and completing them. Run twice on the same sockets: requests with a pick-up point (nearby dispatch), then without
one (every driver hears every request: the old rule), for the ratio.

Reports request -> each driver reached (p50, p99) and drivers reached per request, whether every request reached
exactly the available drivers in range, fix -> rider and trip event -> rider latency, and CPU."""

from __future__ import annotations

import collections
import math
import random
import time
from array import array
from typing import Any

import uvloop

from taxiload.accounts import Account, make_accounts
from taxiload.proc import cpu_seconds
from taxiload.ws_city_agents import HEARTBEAT_S, CityRiders, home
from taxiload.ws_common import LIMIT_HINT, Bench, Row, cpu_columns, latency_ms, split
from taxiload.ws_pool import Clients

EARTH_RADIUS_M = 6371007.180918475
# Requests start once every driver has sent fixes for two heartbeat intervals: before its first one, a driver in
# range has no position and rightly hears nothing, which the check would count as a miss (with one interval, a
# few drivers were still missed in the first 2.5 s).
WARM_UP_S = 2 * HEARTBEAT_S
EDGE_M = 1.0  # a driver this close to the radius is in or out by a rounding
AMBIGUOUS_S = 2.5  # a driver that became busy or free this close to a request may or may not hear it
_accounts: dict[tuple[str, int], list[Account]] = {}


def _accounts_for(bench: Bench, group: str, count: int) -> list[Account]:
    """Accounts made once per database (the servers of every worker count share it)."""
    key = (bench.db_name + group, count)
    if key not in _accounts:
        print(f"    making {count} {group} accounts")
        _accounts[key] = make_accounts(bench.server.url, group, count, "City", LIMIT_HINT)
    return _accounts[key]


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(b[1] - a[1]) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def run(bench: Bench) -> list[Row]:
    args, n = bench.args, bench.args.city_drivers
    drivers = _accounts_for(bench, "driver", n)
    riders = _accounts_for(bench, "rider", 50)
    seed = random.randrange(1 << 30)
    procs = max(1, args.client_procs)
    rows = []
    with Clients(procs) as clients:
        urls = [(i, f"{bench.ws}?token={d.access}&protocol=2") for i, d in enumerate(drivers)]
        concurrency = max(1, args.concurrency // procs)
        opened = clients.call(
            "city_open",
            [{"drivers": part, "concurrency": concurrency, "seed": seed} for part in split(urls, procs)],
            timeout=900,
        )
        # Requests and the check use only the drivers whose socket opened (a driver that failed cannot hear).
        live = sorted(i for r in opened for i in r["indexes"])
        sockets = len(live)
        failures = collections.Counter[str]()
        for r in opened:
            failures.update(r["failures"])
        print(
            f"    {sockets} driver sockets open (protocol 2)"
            + (f"; failed to open: {dict(failures)}" if failures else "")
        )
        for located in [rule == "nearby" for rule in args.city_runs]:
            print(
                f"    {'nearby dispatch' if located else 'old rule (every driver)'}: {args.city_rate} requests/s for {args.duration} s"
            )
            rows.append(_one_run(bench, clients, procs, riders, seed, live, located))
            time.sleep(2)
        clients.call("city_close")
    return rows


def _one_run(
    bench: Bench, clients: Clients, procs: int, riders: list[Account], seed: int, live: list[int], located: bool
) -> Row:
    sockets = len(live)
    args = bench.args
    start_ns = time.time_ns() + 1_000_000_000
    deadline_ns = start_ns + int((WARM_UP_S + args.duration) * 1e9)
    city = CityRiders(seed, live, located)
    measure_ns = start_ns + int(WARM_UP_S * 1e9)  # CPU is counted from here, by every process alike
    clients.send("city_run", [{"start_ns": start_ns, "measure_ns": measure_ns, "deadline_ns": deadline_ns}] * procs)
    time.sleep(1.0 + WARM_UP_S)
    before, cpu0, t0 = bench.snapshot(), cpu_seconds(), time.monotonic()
    # CPU is counted while requests are sent, not in the quiet seconds after, when the last trips finish (which
    # made a saturated box look a third idle).
    window: dict[str, Any] = {}

    def requests_done() -> None:
        window.update(after=bench.snapshot(), cpu_s=cpu_seconds() - cpu0, wall=time.monotonic() - t0)

    uvloop.run(city.run(bench.ws, [r.access for r in riders], args.duration, args.city_rate, requests_done))
    got = clients.receive(timeout=args.duration + 120)
    wall = time.monotonic() - t0
    client_cpu = [window["cpu_s"], *(r["cpu_s"] for r in got)]
    figures, problems = _figures(args, city, got, sockets, located, wall)
    name = "city" if located else "city-old-rule"
    cpu = cpu_columns(before, window["after"], window["wall"], client_cpu)
    return Row(name, bench.server.workers, sockets, figures, cpu, problems)


def _figures(
    args: Any, city: CityRiders, got: list[dict[str, Any]], sockets: int, located: bool, wall: float
) -> tuple[dict[str, Any], list[str]]:
    reached: dict[int, set[int]] = collections.defaultdict(set)
    latency = array("q")
    for r in got:
        pairs = array("q")
        pairs.frombytes(r["reached"])
        for k in range(0, len(pairs), 2):
            reached[pairs[k]].add(pairs[k + 1])
        latency.frombytes(r["latency_us"])
    request = latency_ms(latency)
    fix, event = latency_ms(city.fix_us), latency_ms(city.event_us)
    sent = len(city.requests)
    figures: dict[str, Any] = {
        "requests": sent,
        "requests_per_s": sent / args.duration,
        "fixes_per_s": sum(r["fixes"] for r in got) / (WARM_UP_S + args.duration),  # heartbeats throughout
        "reached_per_request": sum(len(v) for v in reached.values()) / max(sent, 1),
        "request_p50_ms": request["p50_ms"],
        "request_p99_ms": request["p99_ms"],
        "fix_p50_ms": fix["p50_ms"],
        "fix_p99_ms": fix["p99_ms"],
        "event_p99_ms": event["p99_ms"],
        "echo_p99_ms": latency_ms(city.echo_us)["p99_ms"],
        "wall_s": wall,
    }
    problems = [f"error frames: {dict(city.errors)}"] if city.errors else []
    errors = collections.Counter[str]()
    for r in got:
        errors.update(r["errors"])
    if errors:
        problems.append(f"driver error frames: {dict(errors)}")
    if closed := sum(r["closed"] for r in got):
        problems.append(f"{closed} driver sockets were closed by the server")
    if located:
        missed, extra, checked, edge, requests_wrong = _check(args.radius, city, reached)
        figures |= {
            "missed": missed,
            "extra": extra,
            "checked": checked,
            "at_the_edge": edge,
            "requests_wrong": requests_wrong,
        }
        if missed or extra:
            problems.append(
                f"{missed} deliveries missed and {extra} went out of range, of {checked} expected (in {requests_wrong}"
                f" of {sent} requests; {edge} of them within {EDGE_M:g} m of the radius)"
            )
    return figures, problems


def _check(radius: float, city: CityRiders, reached: dict[int, set[int]]) -> tuple[int, int, int, int, int]:
    """Deliveries expected (available drivers within the radius) and not made, made out of that set, how many
    were expected, how many of the first two were within EDGE_M of the radius, and in how many requests."""
    homes = {i: home(i, city.seed) for i in city.drivers}
    cell = 1000.0
    grid: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    for i, (lat, lng) in homes.items():
        grid[(int(lat * 111_320 // cell), int(lng * 68_000 // cell))].append(i)
    missed = extra = checked = edge = requests_wrong = 0
    span = int(radius // cell) + 2
    for seq, pick_up, busy, at in city.requests:
        gy, gx = int(pick_up[0] * 111_320 // cell), int(pick_up[1] * 68_000 // cell)
        near = [
            i
            for dy in range(-span, span + 1)
            for dx in range(-span * 2, span * 2 + 1)
            for i in grid.get((gy + dy, gx + dx), ())
        ]
        in_range = {i for i in near if distance_m(homes[i], pick_up) <= radius}
        ambiguous = {
            i
            for i in set(in_range) | reached.get(seq, set())
            if any(abs(t - at) < AMBIGUOUS_S for t in city.transitions.get(i, ()))
        }
        expected = in_range - busy - ambiguous
        got = reached.get(seq, set())
        checked += len(expected)
        unheard, unexpected = expected - got, got - expected - ambiguous
        missed += len(unheard)
        extra += len(unexpected)
        wrong = unheard | unexpected
        edge += sum(abs(distance_m(homes[i], pick_up) - radius) < EDGE_M for i in wrong)
        requests_wrong += bool(wrong)
    return missed, extra, checked, edge, requests_wrong
