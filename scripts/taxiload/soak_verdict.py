"""The soak's checks after the load: recovery of every fault, the "all services up" windows, the broadcasts due in
them and whether they came, and every acknowledged trip state against the database."""

from __future__ import annotations

import collections
import math
from typing import Any

from taxiload.soak_client import Client
from taxiload.soak_model import AFTER_RECOVERY, BEFORE_FAULT, ORDER, Ack, Life, Trip
from taxiload.soak_run import Soak


def finish_faults(soak: Soak) -> None:
    for fault in soak.faults:
        if fault.kind == "worker" and fault.recovered is None and fault.dropped == 0:
            fault.recovered = fault.begin  # none of the clients' sockets was on it: nothing to recover
            fault.note += "; no client socket was on it"
        elif fault.recovered is None:
            soak.problem(f"{fault.kind}: no successful operation after it came back")


def windows(soak: Soak) -> list[tuple[float, float]]:
    """The "all services up" stretches of the load: everything but 1 s before each fault until 3 s after the
    first successful operation of that kind (or the end, if it never recovered)."""
    cuts = sorted(
        (f.begin - BEFORE_FAULT, (f.recovered if f.recovered is not None else math.inf) + AFTER_RECOVERY)
        for f in soak.faults
    )
    out, start = [], soak.load_start
    for a, b in cuts:
        if a > start:
            out.append((start, min(a, soak.load_end)))
        start = max(start, b)
    if start < soak.load_end:
        out.append((start, soak.load_end))
    return [(a, b) for a, b in out if b > a]


class Tally:
    """Broadcasts due and received, by kind; the missed ones with the sockets that missed them."""

    def __init__(self) -> None:
        self.due = collections.Counter[str]()
        self.got = collections.Counter[str]()
        self.missed: dict[tuple[str, str, float], list[str]] = collections.defaultdict(list)
        self.skipped = {
            "acknowledged outside the windows": 0,
            "socket not open for the whole window": 0,
            "requests to a driver that may have been busy": 0,
        }

    def check(self, what: str, client: Client, life: Life | None, ack: Ack) -> None:
        if life is None:
            self.skipped["socket not open for the whole window"] += 1
            return
        self.due[what] += 1
        if (ack.trip, ack.status) in life.heard:
            self.got[what] += 1
        else:
            self.missed[(ack.trip, ack.status, ack.done)].append(f"{client.label} (connection {life.gen})")


def deliveries(soak: Soak) -> dict[str, Any]:
    """Broadcasts due while all services were up, to sockets open for the whole window, and whether they came:
    create.trip to every driver socket (watchers and the pairs' drivers), STARTED to every driver but the one
    that accepted, and every update to the trip's rider."""
    spans = windows(soak)
    tally = Tally()
    driving = busy_spans(soak)
    for ack in soak.acks:
        window = next(((a, b) for a, b in spans if a <= ack.sent and ack.done <= b), None)
        if window is None:
            tally.skipped["acknowledged outside the windows"] += 1
        else:
            _due(soak, tally, ack, soak.trips[ack.trip], window, driving)
    return {
        "windows": [(round(a - soak.t0, 1), round(b - soak.t0, 1)) for a, b in spans],
        "due": sum(tally.due.values()),
        "delivered": sum(tally.got.values()),
        "by_kind": {k: f"{tally.got[k]} of {tally.due[k]}" for k in sorted(tally.due)},
        "missed": [
            f"{status} of trip {trip}, acknowledged at {soak.rel(done)}, not heard by {len(who)}: {', '.join(who)}"
            + (
                " (the server told the sender the broadcast failed)"
                if (trip, status) in soak.not_notified
                else " (the sender was not told of any failure)"
            )
            for (trip, status, done), who in tally.missed.items()
        ],
        "skipped": tally.skipped,
    }


def busy_spans(soak: Soak) -> dict[int, list[tuple[float, float]]]:
    """Per driver, when it may have been driving a trip (from sending the acceptance to the acknowledgement of the
    completion, or the end): nearby dispatch sends no request to a busy driver."""
    started: dict[str, tuple[int, float]] = {}
    spans: dict[int, list[tuple[float, float]]] = {}
    for ack in soak.acks:
        if ack.status == "STARTED" and ack.driver is not None:
            started[ack.trip] = (ack.driver, ack.sent)
        elif ack.status == "COMPLETED" and ack.trip in started:
            driver, since = started.pop(ack.trip)
            spans.setdefault(driver, []).append((since, ack.done))
    for driver, since in started.values():
        spans.setdefault(driver, []).append((since, float("inf")))
    return spans


def _due(
    soak: Soak,
    tally: Tally,
    ack: Ack,
    trip: Trip,
    window: tuple[float, float],
    driving: dict[int, list[tuple[float, float]]],
) -> None:
    if ack.status in ("REQUESTED", "STARTED"):
        for client in soak.watchers + [p.driver for p in soak.pairs]:
            if client.account.id == ack.driver:
                continue
            spans = driving.get(client.account.id, [])
            if ack.status == "REQUESTED" and any(a <= ack.done and ack.sent <= b for a, b in spans):
                tally.skipped["requests to a driver that may have been busy"] += 1
                continue
            what = "watchers" if client in soak.watchers else "pair drivers"
            tally.check(f"{what} ({ack.status})", client, client.spanning(*window), ack)
    if ack.status != "REQUESTED":
        rider = soak.pairs[ack.pair].rider
        life = rider.spanning(*window)
        if life is not None and not (life.gen == trip.create_gen or life.ready >= trip.member_since):
            life = None  # that connection never joined the trip's group (an orphan created on it)
        tally.check("riders", rider, life, ack)


def check_database(soak: Soak, dsn: str) -> dict[str, Any]:
    """Every acknowledged trip must be stored with its last acknowledged (or re-fetched) status.

    A stored status later than that is allowed only when exactly that step was sent and its outcome never
    became known before the run ended (Trip.pending): the reply was lost with its socket or timed out, or the
    reply was `unavailable` although the UPDATE had committed (the read after it failed), and no retry or re-fetch
    settled it. A stored status earlier than an acknowledged one is a lost update, a missing row a lost trip.
    """
    import psycopg2

    checked = {t.id: t for t in soak.trips.values() if t.acked is not None}
    conn = psycopg2.connect(dsn, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id::text, status, rider_id FROM taxi_trip")
            stored = {row[0]: row[1] for row in cur.fetchall()}
    finally:
        conn.close()
    lost, wrong, later = [], [], 0
    for trip in checked.values():
        status = stored.get(trip.id)
        assert trip.acked is not None and trip.known is not None
        if status is None:
            lost.append(f"trip {trip.id} (acknowledged {trip.acked}) is not in the database")
        elif ORDER[status] < ORDER[trip.acked]:
            wrong.append(f"trip {trip.id}: acknowledged {trip.acked}, stored {status}")
        elif ORDER[status] < ORDER[trip.known]:
            wrong.append(f"trip {trip.id}: read {trip.known} over HTTP, stored {status}")
        elif status != trip.known:
            if status in trip.pending:
                later += 1
            else:
                wrong.append(f"trip {trip.id}: last known {trip.known}, stored {status}, and no step was pending")
    unknown = [i for i in stored if i not in soak.trips]
    return {
        "trips_checked": len(checked),
        "stored_trips": len(stored),
        "lost": lost,
        "wrong": wrong,
        "later_after_ambiguous_step": later,
        "stored_never_acknowledged": len(unknown) + sum(1 for t in soak.trips.values() if t.acked is None),
    }
