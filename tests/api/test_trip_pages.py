"""The trip list in pages: the Link header, the cursor, the status filter, and every trip exactly once while trips
arrive and change between the pages a phone fetches."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sanic_testing.reusable import ReusableClient

from taxi.app import create_app
from taxi.paging import Keyset, encode_cursor
from taxiload.harness import free_port
from tests.conftest import SECRET, make_settings
from tests.support import bearer, log_in, sign_up

_NEXT = re.compile(r'<([^>]+)>; rel="next"')


@pytest.fixture
def rider(client):
    return sign_up(client, "rider@example.com") | log_in(client, "rider@example.com")


@pytest.fixture
def driver(client):
    return sign_up(client, "driver@example.com", group="driver") | log_in(client, "driver@example.com")


def next_url(resp) -> str | None:
    link = resp.headers.get("link")
    if link is None:
        return None
    match = _NEXT.fullmatch(link)
    assert match, link
    return match.group(1)


def follow(client, token: str, url: str, between: Callable[[int], None] = lambda n: None) -> list[list[str]]:
    """The ids of every page from ``url`` on, following each Link; ``between(n)`` runs after page n is read."""
    pages: list[list[str]] = []
    while url is not None:
        _, resp = client.get(url, headers=bearer(token))
        assert resp.status == 200, resp.text
        assert isinstance(resp.json, list)
        pages.append([trip["id"] for trip in resp.json])
        assert len(pages) < 50, "the links never end"
        url = next_url(resp)
        if url is not None:
            between(len(pages))
    return pages


def flat(pages: list[list[str]]) -> list[str]:
    return [trip for page in pages for trip in page]


def stamp(seconds_ago: float) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) - timedelta(seconds=seconds_ago)


def newest_first(trips: dict[str, datetime]) -> list[str]:
    return sorted(trips, key=lambda trip_id: (trips[trip_id], uuid.UUID(trip_id)), reverse=True)


def test_pages_show_every_trip_once_while_new_trips_arrive(client, sql, rider):
    other = sign_up(client, "other@example.com")
    # Three trips share each timestamp, so pages also end in the middle of a tie (the id breaks it).
    mine = {}
    for n in range(11):
        created = stamp(600 - n // 3)
        mine[sql.add_trip(rider["id"], created=created)] = created
    sql.add_trip(other["id"], created=stamp(599))
    arrived = []

    def new_trips(_: int) -> None:
        arrived.append(sql.add_trip(rider["id"]))  # now: newer than every page so far
        sql.add_trip(other["id"], created=stamp(601))

    pages = follow(client, rider["access"], "/api/trip/?limit=3", between=new_trips)
    assert [len(page) for page in pages] == [3, 3, 3, 2]
    assert flat(pages) == newest_first(mine)
    # The trips that arrived meanwhile are on the next first page, newest first.
    _, first = client.get("/api/trip/?limit=3", headers=bearer(rider["access"]))
    assert [trip["id"] for trip in first.json] == arrived[::-1]


def test_the_last_page_has_no_link(client, sql, rider):
    _, empty = client.get("/api/trip/", headers=bearer(rider["access"]))
    assert empty.status == 200 and empty.json == [] and "link" not in empty.headers
    for n in range(3):
        sql.add_trip(rider["id"], age_seconds=n)
    _, exact = client.get("/api/trip/?limit=3", headers=bearer(rider["access"]))
    assert len(exact.json) == 3 and "link" not in exact.headers  # nothing older: no empty page to fetch
    sql.add_trip(rider["id"], age_seconds=10)
    _, more = client.get("/api/trip/?limit=3", headers=bearer(rider["access"]))
    url = next_url(more)
    assert url is not None and url.startswith("/api/trip/?")
    _, last = client.get(url, headers=bearer(rider["access"]))
    assert len(last.json) == 1 and "link" not in last.headers


def test_status_filters_every_page_and_the_link_keeps_it(client, sql, rider, driver):
    statuses = ["COMPLETED", "COMPLETED", "IN_PROGRESS", "COMPLETED", "REQUESTED", "COMPLETED", "COMPLETED"]
    stored = {}  # newest first
    for n, status in enumerate(statuses):
        stored[sql.add_trip(rider["id"], None if status == "REQUESTED" else driver["id"], status, age_seconds=n)] = (
            status
        )
    by_status = {s: [trip for trip, status in stored.items() if status == s] for s in set(statuses)}
    _, first = client.get("/api/trip/?status=COMPLETED&limit=2", headers=bearer(rider["access"]))
    assert parse_qs(urlsplit(next_url(first)).query)["status"] == ["COMPLETED"]
    assert parse_qs(urlsplit(next_url(first)).query)["limit"] == ["2"]
    for status, ids in by_status.items():
        for token in (rider["access"], driver["access"]):
            pages = follow(client, token, f"/api/trip/?status={status}&limit=2")
            assert flat(pages) == ids, (status, token == driver["access"])
    _, started = client.get("/api/trip/?status=STARTED", headers=bearer(rider["access"]))
    assert started.status == 200 and started.json == [] and "link" not in started.headers


def test_a_drivers_pages_merge_open_requests_and_driven_trips_once_each(client, sql, rider, driver):
    """Requests the driver could accept and trips it drives, interleaved; meanwhile a request arrives, one not yet
    shown is accepted by this driver (it moves from one half of the list to the other) and one by another driver
    (no longer visible). Each visible trip is shown exactly once, in order."""
    rival = sign_up(client, "rival@example.com", group="driver")
    created = {}
    kinds = ["REQUESTED", "COMPLETED", "REQUESTED", "IN_PROGRESS", "REQUESTED", "COMPLETED", "REQUESTED", "REQUESTED"]
    for n, status in enumerate(kinds):
        trip_id = sql.add_trip(rider["id"], None if status == "REQUESTED" else driver["id"], status, created=stamp(n))
        created[trip_id] = stamp(n)
    sql.add_trip(rider["id"], rival["id"], "COMPLETED", created=stamp(3.5))  # the rival's: never shown
    order = newest_first(created)
    mine_later, theirs_later = order[6], order[7]  # both REQUESTED, on the last pages

    def meanwhile(page: int) -> None:
        sql.add_trip(rider["id"])
        if page == 1:
            sql.execute(
                "UPDATE taxi_trip SET status = 'STARTED', driver_id = %s WHERE id = %s",
                (driver["id"], uuid.UUID(mine_later).hex),
            )
            sql.execute(
                "UPDATE taxi_trip SET status = 'STARTED', driver_id = %s WHERE id = %s",
                (rival["id"], uuid.UUID(theirs_later).hex),
            )

    pages = follow(client, driver["access"], "/api/trip/?limit=2", between=meanwhile)
    assert flat(pages) == [trip for trip in order if trip != theirs_later]
    assert [len(page) for page in pages] == [2, 2, 2, 1]


@pytest.mark.parametrize(
    "query,fields",
    [
        ("cursor=abc", {"cursor"}),
        ("cursor=", {"cursor"}),
        ("cursor=%FF%FE", {"cursor"}),
        ("cursor=" + "A" * 5000, {"cursor"}),
        ("status=FINISHED", {"status"}),
        ("status=completed", {"status"}),
        ("status=", {"status"}),
        ("status=COMPLETED&status=REQUESTED", {"status"}),
        ("limit=0&status=X&cursor=Y", {"limit", "status", "cursor"}),
    ],
)
def test_bad_cursor_or_status_is_a_400_naming_the_field(client, rider, query, fields):
    _, resp = client.get(f"/api/trip/?{query}", headers=bearer(rider["access"]))
    assert resp.status == 400, resp.text
    assert set(resp.json) == fields
    assert all(isinstance(m, str) for messages in resp.json.values() for m in messages)


def test_a_cursor_altered_or_signed_elsewhere_is_refused(client, sql, rider):
    for n in range(3):
        sql.add_trip(rider["id"], age_seconds=n)
    _, first = client.get("/api/trip/?limit=1", headers=bearer(rider["access"]))
    cursor = parse_qs(urlsplit(next_url(first)).query)["cursor"][0]
    place = Keyset(datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4())
    variants = {
        "one character changed": cursor[:10] + ("B" if cursor[10] != "B" else "C") + cursor[11:],
        "cut short": cursor[:-4],
        "lengthened": cursor + "AAAA",
        "another secret": encode_cursor(place, "another-secret-" + "x" * 40),
    }
    for name, value in variants.items():
        _, resp = client.get(f"/api/trip/?cursor={value}", headers=bearer(rider["access"]))
        assert resp.status == 400 and list(resp.json) == ["cursor"], name
    _, ours = client.get(f"/api/trip/?cursor={encode_cursor(place, SECRET)}", headers=bearer(rider["access"]))
    assert ours.status == 200


def test_behind_a_proxy_the_link_is_absolute_under_the_public_url(database_url, tmp_path, sql):
    """TAXI_PUBLIC_URL (which may carry a path prefix) is where clients reach the API: the link is built on it. The
    limit stays absent when the client gave none (the default applies to every page)."""
    settings = make_settings(database_url, tmp_path, public_url="https://api.example.com/taxi", trip_list_default=2)
    app = create_app(settings, name=f"taxi_{secrets.token_hex(4)}")
    with ReusableClient(app, port=free_port()) as client:
        rider = sign_up(client, "rider@example.com") | log_in(client, "rider@example.com")
        ids = [sql.add_trip(rider["id"], age_seconds=n) for n in range(3)]
        _, first = client.get("/api/trip/", headers=bearer(rider["access"]))
        url = urlsplit(next_url(first))
        assert (url.scheme, url.netloc, url.path) == ("https", "api.example.com", "/taxi/api/trip/")
        assert set(parse_qs(url.query)) == {"cursor"}
        _, second = client.get(f"/api/trip/?{url.query}", headers=bearer(rider["access"]))
        assert [t["id"] for t in first.json + second.json] == ids and "link" not in second.headers


def test_a_browser_on_an_allowed_origin_may_read_the_link(database_url, tmp_path, sql):
    settings = make_settings(database_url, tmp_path, cors_origins=("http://localhost:3000",))
    app = create_app(settings, name=f"taxi_{secrets.token_hex(4)}")
    with ReusableClient(app, port=free_port()) as client:
        rider = sign_up(client, "rider@example.com") | log_in(client, "rider@example.com")
        sql.add_trip(rider["id"], age_seconds=1)
        sql.add_trip(rider["id"], age_seconds=2)
        headers = {**bearer(rider["access"]), "Origin": "http://localhost:3000"}
        _, resp = client.get("/api/trip/?limit=1", headers=headers)
        assert "link" in resp.headers
        assert "link" in resp.headers["access-control-expose-headers"].lower().split(",")
