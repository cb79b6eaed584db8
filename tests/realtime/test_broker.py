"""The relay on a real Redis: two relays on one Redis stand in for two workers."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis.asyncio as aioredis

from taxi.realtime import BrokerUnavailable, Hub, LocalBroker, RedisBroker, Relay, Session
from taxi.realtime.broker import channel_namespace
from tests.conftest import REDIS_URL
from tests.support import eventually


class Sink:
    """A session whose frames land in a list."""

    def __init__(self, queue_size: int = 64) -> None:
        self.frames: list[str] = []
        self.closed_with: tuple[int, str] | None = None
        self.session = Session(self._send, self._abort, queue_size, label="sink")
        self.session.start()

    async def _send(self, text: str) -> None:
        self.frames.append(text)

    def _abort(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)

    async def settle(self, n: int, timeout: float = 5.0) -> list[str]:
        """The frames, once at least ``n`` have arrived."""
        return await eventually(
            lambda: self.frames, f"{n} frames arrive", until=lambda got: len(got) >= n, timeout=timeout
        )


@pytest.fixture
async def workers():
    prefix = f"taxi_test_{secrets.token_hex(4)}:"
    relays = []
    for _ in range(2):
        relay = Relay(Hub(), lambda deliver: RedisBroker(REDIS_URL, prefix, deliver))
        await relay.broker.start()
        relays.append(relay)
    admin = aioredis.from_url(REDIS_URL, decode_responses=True)
    yield relays, admin, prefix
    for relay in relays:
        await relay.broker.stop()
    await admin.aclose()


async def numsub(admin, prefix: str, group: str) -> int:
    return int((await admin.pubsub_numsub(f"{channel_namespace(REDIS_URL, prefix)}group:{group}"))[0][1])


# Two seams into RedisBroker's internals, for what its public interface cannot do or show:


def queue_subscribe_unsent(broker: RedisBroker, group: str) -> None:
    """Queue a SUBSCRIBE for ``group`` without letting the control task send it: the race below needs a
    subscribe that is still queued, and the public ``subscribe`` awaits Redis's confirmation (which lets the
    control task run). This is the first half of what ``subscribe`` does."""
    broker._ask(broker.channel(group))


def pending_confirmations(broker: RedisBroker) -> dict:
    """The subscribes still waiting for Redis's confirmation, per channel. Nothing public shows this
    bookkeeping; a leak here (an entry left per channel ever used) would grow with every group ever joined."""
    return dict(broker._awaiting)


async def test_publish_reaches_members_on_both_workers_but_not_the_origin(workers):
    (a, b), admin, prefix = workers
    a1, a2, b1 = Sink(), Sink(), Sink()
    for relay, sink in ((a, a1), (a, a2), (b, b1)):
        await relay.join(sink.session, "drivers")
    assert await numsub(admin, prefix, "drivers") == 2  # one subscription per worker, not per socket
    await a.publish("drivers", '{"n":1}', exclude=a1.session)
    assert await a2.settle(1) == ['{"n":1}'] and await b1.settle(1) == ['{"n":1}']
    await asyncio.sleep(0.05)
    assert a1.frames == []


async def test_subscribe_on_first_join_and_unsubscribe_on_last_leave(workers):
    (a, _), admin, prefix = workers
    s1, s2 = Sink(), Sink()
    assert await numsub(admin, prefix, "trip:x") == 0
    await a.join(s1.session, "trip:x")
    await a.join(s2.session, "trip:x")
    assert await numsub(admin, prefix, "trip:x") == 1
    a.leave_all(s1.session)
    await asyncio.sleep(0.05)
    assert await numsub(admin, prefix, "trip:x") == 1
    a.leave_all(s2.session)
    await eventually(lambda: numsub(admin, prefix, "trip:x"), "the last leave unsubscribes", until=lambda n: n == 0)
    assert a.hub.members == {} and a.broker.subscribed_groups == []


async def test_leave_then_join_again_ends_subscribed(workers):
    (a, b), _, _ = workers
    s1, s2 = Sink(), Sink()
    await a.join(s1.session, "g")
    a.leave_all(s1.session)  # UNSUBSCRIBE queued ...
    await a.join(s2.session, "g")  # ... then SUBSCRIBE: order is kept
    await b.publish("g", "hello")
    assert await s2.settle(1) == ["hello"]


async def test_a_join_that_returned_never_misses_a_later_publish(workers):
    (a, b), _, _ = workers
    for i in range(30):
        sink = Sink()
        await a.join(sink.session, f"fresh:{i}")
        await b.publish(f"fresh:{i}", f"m{i}")  # from the other worker, right after the join returned
        assert await sink.settle(1, timeout=2) == [f"m{i}"], i
        a.leave_all(sink.session)


async def test_order_is_kept_per_group(workers):
    (a, b), _, _ = workers
    sink = Sink(queue_size=1000)
    await a.join(sink.session, "ordered")
    for i in range(200):
        await b.publish("ordered", str(i))
    assert await sink.settle(200) == [str(i) for i in range(200)]


async def test_a_full_queue_closes_the_session_with_1013_and_others_still_get_frames(workers):
    (a, _), _, _ = workers
    blocked = asyncio.Event()

    async def never_returns(text: str) -> None:
        await blocked.wait()

    aborted: list[tuple[int, str]] = []
    stuck = Session(never_returns, lambda code, reason: aborted.append((code, reason)), 4, label="stuck")
    stuck.start()
    fine = Sink()
    await a.join(stuck, "busy")
    await a.join(fine.session, "busy")
    for i in range(10):
        await a.publish("busy", str(i))
    assert await fine.settle(10) == [str(i) for i in range(10)]
    assert aborted and aborted[0][0] == 1013 and stuck.closed
    blocked.set()


async def test_publishing_without_redis_raises_broker_unavailable(private_redis):
    relay = Relay(Hub(), LocalBroker)
    broker = RedisBroker(private_redis.url, "taxi_test_x:", relay.deliver, publish_timeout=0.5)
    await broker.start()
    try:
        await broker.publish("drivers", "reaches Redis")
        private_redis.stop()  # nothing listens there any more
        with pytest.raises(BrokerUnavailable):
            await broker.publish("drivers", "x")
    finally:
        await broker.stop()


async def test_local_broker_has_the_same_behaviour_in_one_process():
    hub = Hub()
    relay = Relay(hub, LocalBroker)
    s1, s2 = Sink(), Sink()
    await relay.join(s1.session, "drivers")
    await relay.join(s2.session, "drivers")
    await relay.publish("drivers", "x", exclude=s2.session)
    assert await s1.settle(1) == ["x"]
    assert s2.frames == []
    relay.leave_all(s1.session)
    relay.leave_all(s2.session)
    assert hub.members == {}


async def test_a_superseded_subscribe_does_not_leave_the_group_deaf(workers):
    """Queued before the control task runs: SUBSCRIBE (first member), UNSUBSCRIBE (it left), SUBSCRIBE (a new
    member). Redis must end subscribed, and the new member must hear the group."""
    (a, b), admin, prefix = workers
    first, second = Sink(), Sink()
    a.hub.add(first.session, "race")
    queue_subscribe_unsent(a.broker, "race")  # the first member's SUBSCRIBE, still queued
    a.leave_all(first.session)  # its UNSUBSCRIBE, queued behind it
    await a.join(second.session, "race")  # a second SUBSCRIBE; returns once Redis confirms
    assert await numsub(admin, prefix, "race") == 1
    await b.publish("race", "heard")
    assert await second.settle(1) == ["heard"]
    a.leave_all(second.session)

    async def leftovers():
        return pending_confirmations(a.broker), await numsub(admin, prefix, "race")

    # No per-channel bookkeeping outlives the group, and Redis drops the subscription.
    await eventually(leftovers, "the group leaves nothing behind", until=lambda left: left == ({}, 0))
    assert a.broker.subscribed_groups == []


async def test_a_groups_last_event_ends_it_on_every_worker(workers):
    (a, b), admin, prefix = workers
    on_a, on_b = Sink(), Sink()
    await a.join(on_a.session, "trip:done")
    await b.join(on_b.session, "trip:done")
    await a.publish("trip:done", "COMPLETED", end=True)
    assert await on_a.settle(1) == ["COMPLETED"] and await on_b.settle(1) == ["COMPLETED"]
    await eventually(lambda: numsub(admin, prefix, "trip:done"), "both workers unsubscribe", until=lambda n: n == 0)
    assert "trip:done" not in a.hub.members and "trip:done" not in b.hub.members
    assert on_a.session.groups == set() and on_b.session.groups == set()


async def test_frames_go_out_directly_when_idle_and_in_order_otherwise():
    written: list[str] = []
    queued: list[str] = []
    ready = {"now": True}
    release = asyncio.Event()

    def write_now(text: str) -> bool:
        if ready["now"]:
            written.append(text)
        return ready["now"]

    async def slow_send(text: str) -> None:
        await release.wait()
        queued.append(text)

    session = Session(slow_send, lambda code, reason: None, 8, write_now=write_now)
    session.start()
    assert session.offer("a") and written == ["a"]  # idle: straight to the socket, no task hop
    ready["now"] = False  # busy (a send in progress or backpressure): the writer task takes over
    assert session.offer("b") and session.offer("c")
    ready["now"] = True
    assert session.offer("d")  # frames are waiting ahead of it: it must queue behind them, not overtake
    assert written == ["a"]
    release.set()
    await eventually(lambda: queued, "the writer task sends the queued frames", until=lambda sent: len(sent) == 3)
    assert queued == ["b", "c", "d"]
    session.stop()


async def test_a_socket_that_is_behind_gets_the_newest_position_after_its_trip_events_not_a_backlog():
    sent: list[str] = []
    release = asyncio.Event()

    async def slow_send(text: str) -> None:
        await release.wait()
        sent.append(text)

    session = Session(slow_send, lambda code, reason: None, 8, write_now=lambda text: False)
    session.start()
    session.offer("trip event 1")
    for n in range(100):  # a position every few milliseconds while the client is not reading
        assert session.offer_latest("location:t1", f"t1 at {n}")
    session.offer_latest("location:t2", "t2 at 0")
    session.offer("trip event 2")
    release.set()
    await eventually(lambda: sent, "the writer catches up", until=lambda got: len(got) >= 4)
    await asyncio.sleep(0.05)
    assert sent == ["trip event 1", "trip event 2", "t1 at 99", "t2 at 0"]
    # And a position offered to an idle socket with nothing queued goes out as it comes.
    session.offer_latest("location:t1", "t1 at 100")
    await eventually(lambda: sent, "an idle writer sends it", until=lambda got: len(got) == 5)
    assert sent[-1] == "t1 at 100"
    session.stop()


async def test_deliveries_narrowed_by_version_and_user_reach_exactly_those_sockets(workers):
    relays, _, _ = workers
    a, b = relays
    sinks = {}
    for relay, user, version in ((a, 1, 1), (a, 2, 2), (b, 2, 1), (b, 3, 2), (b, 4, 2)):
        sink = Sink()
        sink.session.user, sink.session.version = user, version
        relay.open(sink.session)
        await relay.join(sink.session, "drivers")
        sinks[(relay is a, user, version)] = sink
    await a.publish("drivers", "v2 only", min_version=2)
    await a.publish("drivers", "to 2 and 4", only=frozenset({2, 4, 99}))
    await b.publish("drivers", "all but 2", skip=frozenset({2}))
    got = {key: await sink.settle(1) for key, sink in sinks.items()}
    await asyncio.sleep(0.2)
    assert {key: sink.frames for key, sink in sinks.items()} == {
        (True, 1, 1): ["all but 2"],
        (True, 2, 2): ["v2 only", "to 2 and 4"],
        (False, 2, 1): ["to 2 and 4"],
        (False, 3, 2): ["v2 only", "all but 2"],
        (False, 4, 2): ["v2 only", "to 2 and 4", "all but 2"],
    }, got


@pytest.mark.parametrize(
    ("url", "prefix", "expected"),
    [
        ("redis://127.0.0.1:6379/12", "taxi:", "taxi:db12:"),
        ("redis://127.0.0.1:6379?db=13", "taxi:", "taxi:db13:"),
        ("rediss://cache:6380/2", "staging:", "staging:db2:"),
        ("unix:///run/redis.sock?db=4", "taxi:", "taxi:db4:"),
        ("redis://127.0.0.1:6379", "taxi:", "taxi:db0:"),
    ],
)
def test_channels_carry_the_database_number_of_the_url(url, prefix, expected):
    """Pub/sub ignores the database number, so it is part of every channel name."""
    assert channel_namespace(url, prefix) == expected


async def test_per_trip_a_socket_only_ever_gets_newer_versions_whichever_worker_publishes(workers):
    relays, _, _ = workers
    a, b = relays
    sink = Sink()
    a.open(sink.session)
    await a.join(sink.session, "trip:t")
    # Two workers publish versions of one trip; the third version overtakes the second on its way.
    await b.publish("trip:t", "v1", seq=("t", 1))
    await a.publish("trip:t", "v3", seq=("t", 3))
    await b.publish("trip:t", "v2", seq=("t", 2))
    await b.publish("trip:t", "v3 again", seq=("t", 3))
    await b.publish("trip:t", "other trip v1", seq=("u", 1))
    await b.publish("trip:t", "unnumbered")
    await sink.settle(4)
    await asyncio.sleep(0.2)
    assert sink.frames == ["v1", "v3", "other trip v1", "unnumbered"]
    # What a resuming client says it has counts the same way.
    sink.session.advance("u", 5)
    assert not sink.session.offer("u v4", ("u", 4)) and sink.session.offer("u v6", ("u", 6))


async def test_after_a_lost_subscription_only_version_2_sockets_are_told_to_resume(private_redis):
    relay = Relay(Hub(), lambda deliver: RedisBroker(private_redis.url, "taxi_test_resync:", deliver), resync="resync!")
    await relay.broker.start()
    try:
        old, new = Sink(), Sink()
        new.session.version = 2
        for sink in (old, new):
            relay.open(sink.session)
            await relay.join(sink.session, "drivers")
        private_redis.stop()
        private_redis.start()
        assert await new.settle(1, timeout=15) == ["resync!"]
        await relay.publish("drivers", "after")
        assert await new.settle(2) == ["resync!", "after"]
        assert await old.settle(1) == ["after"]
    finally:
        await relay.broker.stop()
