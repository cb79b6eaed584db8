"""``taxi trips list|show``: any trip, as an administrator reads it."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from taxi.cli import output
from taxi.cli.common import database, settings
from taxi.domain import STATUSES
from taxi.geo import Point
from taxi.queries.trips import TripRow
from taxi.schemas import parse_trip_id
from taxi.services import admin
from taxi.services.trips import trip_out


def add(sub: Any) -> None:
    trips = sub.add_parser("trips", help="list and show trips")
    actions = trips.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="the newest trips first")
    listing.add_argument("--status", choices=STATUSES, help="only trips in this status")
    listing.add_argument("--user", metavar="U", help="only trips that user U rides or drives")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--json", action="store_true", help="print JSON (the API's trip shape) instead of a table")
    listing.set_defaults(run=run_list)

    show = actions.add_parser("show", help="one trip, every field")
    show.add_argument("id", help="the trip's id (a UUID)")
    show.add_argument("--json", action="store_true", help="print JSON (the API's trip shape)")
    show.set_defaults(run=run_show)


def _name(user: Any) -> str | None:
    return f"{user.username} ({user.id})" if user else None


def _point(point: Point | None) -> str | None:
    return f"{point.lat}, {point.lng}" if point else None


def run_list(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    config = settings(env)

    async def work() -> list[TripRow]:
        async with database(config):
            return await admin.find_trips(args.status, args.user, max(1, args.limit))

    found = asyncio.run(work())
    if args.json:
        print(output.as_json([trip_out(t, config.public_url) for t in found]))
        return 0
    rows = [
        (t.id, t.status, t.created[:19].replace("T", " "), _name(t.rider), _name(t.driver), t.pick_up_address)
        for t in found
    ]
    print(output.table(("id", "status", "created (UTC)", "rider", "driver", "pick-up"), rows))
    return 0


def run_show(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    config = settings(env)
    trip_id = parse_trip_id(args.id)

    async def work() -> TripRow:
        async with database(config):
            return await admin.trip(trip_id)

    trip = asyncio.run(work())
    shape = trip_out(trip, config.public_url)
    if args.json:
        print(output.as_json(shape))
        return 0
    pairs = [
        ("id", trip.id),
        ("status", trip.status),
        ("created", trip.created),
        ("updated", trip.updated),
        ("rider", _name(trip.rider)),
        ("driver", _name(trip.driver)),
        ("pick-up", trip.pick_up_address),
        ("pick-up point", _point(trip.pick_up_location)),
        ("drop-off", trip.drop_off_address),
        ("drop-off point", _point(trip.drop_off_location)),
    ]
    print(output.fields(pairs))
    return 0
