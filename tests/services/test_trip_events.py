"""The trip-event policy through a fake publisher: who joins which group, who hears which event."""

from __future__ import annotations

import json

import pytest

from taxi.errors import BrokerUnavailable
from taxi.services.trip_events import DRIVERS, EVERY_DRIVER, Audience, TripEvents, groups_on_connect, trip_group


class Member:
    def __init__(self, label: str) -> None:
        self.label = label
        self.sent: list[dict] = []

    def offer(self, text: str, seq: tuple[str, int] | None = None) -> bool:
        self.sent.append(json.loads(text))
        return True


class FakePublisher:
    """Records joins, leaves and publishes; ``down`` makes every join and publish fail like a lost Redis."""

    def __init__(self) -> None:
        self.members: dict[str, set[Member]] = {}
        self.published: list[tuple[str, dict, Member | None, bool]] = []
        self.narrowed: list[dict] = []  # per publish: the version, users and key it was narrowed to
        self.down = False

    async def join(self, member: Member, group: str) -> None:
        if self.down:
            raise BrokerUnavailable("down")
        self.members.setdefault(group, set()).add(member)

    def leave(self, member: Member, group: str) -> None:
        self.members.get(group, set()).discard(member)

    async def publish(
        self,
        group: str,
        text: str,
        exclude: Member | None = None,
        end: bool = False,
        *,
        min_version: int = 1,
        only: frozenset[int] | None = None,
        skip: frozenset[int] = frozenset(),
        latest: str | None = None,
        seq: tuple[str, int] | None = None,
        leave: frozenset[int] = frozenset(),
    ) -> None:
        if self.down:
            raise BrokerUnavailable("down")
        self.published.append((group, json.loads(text), exclude, end))
        self.narrowed.append({"min_version": min_version, "only": only, "skip": skip, "latest": latest, "seq": seq})


TRIP = {"id": "t1", "status": "REQUESTED", "version": 1}


def test_a_driver_joins_drivers_and_every_socket_joins_its_open_trips():
    assert groups_on_connect("driver", ["a"]) == [DRIVERS, "trip:a"]
    assert groups_on_connect("rider", ["a", "b"]) == ["trip:a", "trip:b"]
    assert groups_on_connect("rider", []) == []


async def test_a_request_is_answered_to_its_rider_and_published_to_the_trip_and_every_driver():
    publisher, rider = FakePublisher(), Member("rider")
    events = TripEvents(publisher)
    await events.before_request(rider, "t1")
    assert rider in publisher.members[trip_group("t1")]
    await events.requested(rider, TRIP, EVERY_DRIVER)
    assert rider.sent == [{"type": "echo.message", "data": TRIP}]
    assert [(g, e, end) for g, _, e, end in publisher.published] == [("trip:t1", rider, False), (DRIVERS, rider, False)]
    assert [n["seq"] for n in publisher.narrowed] == [("t1", 1), ("t1", 1)]  # numbered by the trip's version


@pytest.mark.parametrize(
    "status,to_drivers,end", [("STARTED", True, False), ("IN_PROGRESS", False, False), ("COMPLETED", False, True)]
)
async def test_an_update_reaches_drivers_only_on_acceptance_and_ends_the_group_on_completion(status, to_drivers, end):
    publisher, driver = FakePublisher(), Member("driver")
    events = TripEvents(publisher)
    await events.updated(driver, {**TRIP, "status": status})
    groups = [g for g, *_ in publisher.published]
    assert groups == (["trip:t1", DRIVERS] if to_drivers else ["trip:t1"])
    assert publisher.published[0][3] is end
    assert driver.sent[0]["data"]["status"] == status
    assert (driver in publisher.members["trip:t1"]) is not end  # the driver leaves a completed trip's group


async def test_a_committed_change_still_reaches_its_author_when_nobody_else_can_be_told():
    publisher, rider = FakePublisher(), Member("rider")
    publisher.down = True
    events = TripEvents(publisher)
    await events.before_request(rider, "t1")  # no error: the trip is still stored
    await events.requested(rider, TRIP, EVERY_DRIVER)
    assert rider.sent[0] == {"type": "echo.message", "data": TRIP}
    assert rider.sent[1]["type"] == "error" and rider.sent[1]["data"]["code"] == "unavailable"
    with pytest.raises(BrokerUnavailable):
        await events.connected(rider, "rider", ["t1"])  # a socket that cannot join must be refused


async def test_a_request_reaches_only_its_audience_and_nobody_when_it_has_none():
    publisher, rider = FakePublisher(), Member("rider")
    events = TripEvents(publisher)
    await events.requested(rider, TRIP, Audience(only=frozenset({7, 9})))
    await events.requested(rider, {**TRIP, "id": "t2"}, Audience(skip=frozenset({3})))
    await events.requested(rider, {**TRIP, "id": "t3"}, Audience(only=frozenset()))
    to_drivers = [
        (n["only"], n["skip"])
        for (g, *_), n in zip(publisher.published, publisher.narrowed, strict=True)
        if g == DRIVERS
    ]
    assert to_drivers == [(frozenset({7, 9}), frozenset()), (None, frozenset({3}))]  # t3: no driver in range
    assert [g for g, *_ in publisher.published].count("trip:t3") == 1  # its rider's other sockets still hear it


async def test_a_request_whose_drivers_cannot_be_found_is_kept_and_its_rider_told():
    publisher, rider = FakePublisher(), Member("rider")
    await TripEvents(publisher).requested(rider, TRIP, None)
    assert [g for g, *_ in publisher.published] == ["trip:t1"]
    assert rider.sent[0]["data"] == TRIP and rider.sent[1]["data"]["code"] == "unavailable"


async def test_an_acceptance_reaches_the_drivers_the_request_reached():
    publisher, driver = FakePublisher(), Member("driver")
    await TripEvents(publisher).updated(driver, {**TRIP, "status": "STARTED"}, Audience(only=frozenset({4})))
    assert [(g, n["only"]) for (g, *_), n in zip(publisher.published, publisher.narrowed, strict=True)] == [
        ("trip:t1", None),
        (DRIVERS, frozenset({4})),
    ]


async def test_a_drivers_position_goes_to_its_trip_on_version_2_superseding_the_last():
    publisher = FakePublisher()
    await TripEvents(publisher).driver_moved("t1", {"lat": 1.0, "lng": 2.0})
    (group, message, _, _), narrowed = publisher.published[0], publisher.narrowed[0]
    assert group == "trip:t1"
    assert message == {"type": "driver.location", "data": {"trip_id": "t1", "lat": 1.0, "lng": 2.0}}
    assert narrowed["min_version"] == 2 and narrowed["latest"] == "location:t1"
