"""Reading trips over HTTP: visibility by role, order, shape, limits, and the token guard."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from tests.conftest import SECRET
from tests.support import bearer, log_in, sign_up


@pytest.fixture
def rider(client):
    user = sign_up(client, "rider@example.com", group="rider")
    return user | log_in(client, "rider@example.com")


@pytest.fixture
def driver(client):
    user = sign_up(client, "driver@example.com", group="driver")
    return user | log_in(client, "driver@example.com")


def test_rider_lists_only_their_own_trips_newest_first(client, sql, rider):
    other = sign_up(client, "other@example.com")
    older = sql.add_trip(rider["id"], pick_up="A", drop_off="B", age_seconds=60)
    newer = sql.add_trip(rider["id"], pick_up="B", drop_off="C", age_seconds=1)
    sql.add_trip(other["id"], pick_up="C", drop_off="D")
    sql.add_trip(None, pick_up="X", drop_off="Y")
    _, resp = client.get("/api/trip/", headers=bearer(rider["access"]))
    assert resp.status == 200
    assert [t["id"] for t in resp.json] == [newer, older]
    # Each trip in the list is exactly what its detail route returns.
    for trip in resp.json:
        assert client.get(f"/api/trip/{trip['id']}/", headers=bearer(rider["access"]))[1].json == trip


def test_trip_shape_matches_the_reference_client(client, sql, rider, driver):
    trip_id = sql.add_trip(rider["id"], driver["id"], status="STARTED", pick_up="1 Main St", drop_off="2 Oak Ave")
    _, resp = client.get(f"/api/trip/{trip_id}/", headers=bearer(rider["access"]))
    assert resp.status == 200
    trip = resp.json
    # The reference client's fields, the three of nearby dispatch (null: this trip named no place, and its
    # driver has sent no position), and the two of sessions (its version; the reason of a cancellation).
    reference = {"id", "created", "updated", "pick_up_address", "drop_off_address", "status", "driver", "rider"}
    dispatch = {"pick_up_location", "drop_off_location", "driver_location"}
    assert set(trip) == reference | dispatch | {"version", "cancel_reason"}
    assert trip["pick_up_location"] is None and trip["drop_off_location"] is None and trip["driver_location"] is None
    assert trip["version"] == 1 and trip["cancel_reason"] is None
    assert trip["id"] == trip_id
    assert trip["pick_up_address"] == "1 Main St" and trip["drop_off_address"] == "2 Oak Ave"
    assert trip["status"] == "STARTED"
    assert trip["created"].endswith("Z") and "T" in trip["created"]
    assert trip["rider"] == {
        "id": rider["id"],
        "username": "rider@example.com",
        "first_name": "Test",
        "last_name": "User",
        "group": "rider",
        "photo": None,
        "photo_thumbnail": None,  # ours: the reference client ignores what it does not know
    }
    assert trip["driver"]["id"] == driver["id"] and trip["driver"]["group"] == "driver"
    assert "password" not in trip["rider"] and "password" not in trip["driver"]


def test_driver_sees_open_requests_and_their_own_trips_only(client, sql, rider, driver):
    other_driver = sign_up(client, "d2@example.com", group="driver")
    requested = sql.add_trip(rider["id"], age_seconds=30)
    mine = sql.add_trip(rider["id"], driver["id"], status="IN_PROGRESS", age_seconds=20)
    finished = sql.add_trip(rider["id"], driver["id"], status="COMPLETED", age_seconds=40)
    theirs = sql.add_trip(rider["id"], other_driver["id"], status="STARTED", age_seconds=10)
    _, resp = client.get("/api/trip/", headers=bearer(driver["access"]))
    assert resp.status == 200
    assert [t["id"] for t in resp.json] == [mine, requested, finished]
    for trip in resp.json:
        assert client.get(f"/api/trip/{trip['id']}/", headers=bearer(driver["access"]))[1].json == trip
    _, hidden = client.get(f"/api/trip/{theirs}/", headers=bearer(driver["access"]))
    assert hidden.status == 404
    _, shown = client.get(f"/api/trip/{requested}/", headers=bearer(driver["access"]))
    assert shown.status == 200 and shown.json["driver"] is None


def test_rider_cannot_read_another_riders_trip(client, sql, rider):
    other = sign_up(client, "other@example.com")
    theirs = sql.add_trip(other["id"])
    _, resp = client.get(f"/api/trip/{theirs}/", headers=bearer(rider["access"]))
    assert resp.status == 404
    assert set(resp.json) == {"detail"}


@pytest.mark.parametrize("trip_id", [str(uuid.uuid4()), "not-a-uuid", "1", "%20"])
def test_unknown_or_malformed_trip_ids_are_404(client, rider, trip_id):
    _, resp = client.get(f"/api/trip/{trip_id}/", headers=bearer(rider["access"]))
    assert resp.status == 404
    assert set(resp.json) == {"detail"}


def test_list_is_bounded_by_limit(client, sql, rider):
    ids = [sql.add_trip(rider["id"], age_seconds=i) for i in range(5)]
    _, resp = client.get("/api/trip/?limit=2", headers=bearer(rider["access"]))
    assert resp.status == 200 and [t["id"] for t in resp.json] == ids[:2]
    for bad in ("0", "-1", "abc", "100000"):
        _, refused = client.get(f"/api/trip/?limit={bad}", headers=bearer(rider["access"]))
        assert refused.status == 400 and "limit" in refused.json, bad


@pytest.mark.parametrize("query", ["limit=", "limit=2&limit=3", "limit=2&limit="])
def test_a_limit_that_is_not_one_integer_is_400_not_ignored(client, sql, rider, query):
    """The document says limit is an integer: an empty or repeated one is refused, not read as the default or the
    first of several."""
    sql.add_trip(rider["id"])
    _, resp = client.get(f"/api/trip/?{query}", headers=bearer(rider["access"]))
    assert resp.status == 400 and list(resp.json) == ["limit"], resp.text
    _, none = client.get("/api/trip/", headers=bearer(rider["access"]))
    assert none.status == 200 and len(none.json) == 1


def token(claims: dict, key: str = SECRET, alg: str = "HS256") -> str:
    now = int(time.time())
    base = {"token_type": "access", "exp": now + 60, "iat": now, "jti": "j", "id": 1}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, key, algorithm=alg)


def test_guard_refuses_every_kind_of_bad_token(client, rider):
    uid = rider["id"]
    header, payload, signature = rider["access"].split(".")
    tampered = ".".join([header, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"), signature])
    unsigned = jwt.encode(
        {"token_type": "access", "exp": int(time.time()) + 60, "iat": 1, "jti": "j", "id": uid}, None, algorithm="none"
    )
    cases = {
        "missing": {},
        "not bearer": {"Authorization": f"Token {rider['access']}"},
        "bearer without token": {"Authorization": "Bearer"},
        "garbage": bearer("garbage"),
        "tampered": bearer(tampered),
        "alg none": bearer(unsigned),
        "other key": bearer(token({"id": uid}, key="another-key-" + "x" * 40)),
        "expired": bearer(token({"id": uid, "exp": int(time.time()) - 5})),
        "refresh as access": bearer(rider["refresh"]),
        "no type": bearer(token({"id": uid, "token_type": None})),
        "string id": bearer(token({"id": str(uid)})),
    }
    for name, headers in cases.items():
        _, resp = client.get("/api/trip/", headers=headers)
        assert resp.status == 401, name
        assert set(resp.json) == {"detail"}, name


def test_tokens_of_deactivated_and_deleted_users_are_refused(client, sql, rider, driver):
    _, before = client.get("/api/trip/", headers=bearer(rider["access"]))
    assert before.status == 200
    sql.execute("UPDATE taxi_user SET is_active = %s WHERE id = %s", (False, rider["id"]))
    _, inactive = client.get("/api/trip/", headers=bearer(rider["access"]))
    assert inactive.status == 401
    sql.execute("DELETE FROM taxi_user WHERE id = %s", (driver["id"],))
    _, deleted = client.get("/api/trip/", headers=bearer(driver["access"]))
    assert deleted.status == 401
    trip = sql.add_trip(None)
    for path in (f"/api/trip/{trip}/", "/api/trip/not-a-uuid/", "/api/trip/?limit=1"):
        for token in (rider["access"], driver["access"]):
            assert client.get(path, headers=bearer(token))[1].status == 401, path
    _, refreshed = client.post("/api/token/refresh/", json={"refresh": driver["refresh"]})
    assert refreshed.status == 401
