"""The soak's vocabulary: trip states, timeouts, and the records it keeps (connections, trips, acknowledgements,
faults, pairs)."""

from __future__ import annotations

import collections
import json
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taxiload.soak_client import Client

ORDER = {"REQUESTED": 0, "STARTED": 1, "IN_PROGRESS": 2, "COMPLETED": 3}
NEXT = {"REQUESTED": "STARTED", "STARTED": "IN_PROGRESS", "IN_PROGRESS": "COMPLETED"}
READY = {"type": "echo.message", "data": "ready"}
# socket.py deliver(): the change is committed and the sender got it, only the broadcast failed. Not a reply.
NOT_NOTIFIED = "could not be notified"

# Every wait is bounded. The server answers within its own 5 s subscription-confirmation timeout plus its 2 s
# publish timeout even while Redis is down, so a reply that takes REPLY_TIMEOUT means something is wrong.
REPLY_TIMEOUT = 15.0
OPEN_TIMEOUT = 5.0  # WebSocket handshake, and the ready echo after it
HTTP_TIMEOUT = 10.0
HEAR_WAIT = 2.0  # a driver waits this long for its rider's create.trip broadcast before asking over HTTP
RETRY_DELAY = 0.2  # before re-sending after an `unavailable` error (jittered)
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0  # reconnects
SETTLE = 20.0  # after the planned end: time to settle (re-fetch) an ambiguous step already under way
HARD_EXTRA = 60.0  # the load phase ends at most this long after its planned end, whatever happens
GRACE = 2.0  # after the load: broadcasts still in flight may arrive
OUTAGE = 3.0  # seconds each restarted service stays down
BEFORE_FAULT, AFTER_RECOVERY = 1.0, 3.0  # what "all services up" excludes around each fault
RESTART_WATCH = 15.0  # how long to watch for Sanic replacing the killed worker


def mono() -> float:
    return time.monotonic()


def is_ready(raw: str | bytes) -> bool:
    try:
        return bool(json.loads(raw) == READY)
    except ValueError:
        return False


@dataclass
class Life:
    """One WebSocket connection of a client, from its open to its close."""

    gen: int  # 1 for the first connection of the client, 2 after the first reconnect, ...
    ready: float = math.inf  # the ready echo came back: from here on it hears every broadcast to its groups
    closed: float | None = None
    code: int | None = None
    heard: set[tuple[str, str]] = field(default_factory=set)  # broadcasts received: (trip id, status)


@dataclass
class Trip:
    id: str
    pair: int
    acked: str | None = None  # the last status acknowledged over the WebSocket
    known: str | None = None  # the latest status known to be committed: acknowledgements and HTTP reads
    # Statuses sent whose outcome never became known (reply lost with the socket, timed out, or `unavailable`:
    # the UPDATE may have committed before the connection broke). A later stored status is explained by one of them.
    pending: set[str] = field(default_factory=set)
    create_gen: int | None = None  # the rider connection whose create.trip was acknowledged (it joined the group)
    member_since: float = math.inf  # a rider connection ready after this joined the trip's group at connect
    orphan: bool = False  # committed without an acknowledgement; found by the rider's re-fetch


@dataclass
class Ack:
    trip: str
    status: str
    sent: float
    done: float
    pair: int
    driver: int | None  # user id of the driver that made the change (None for create.trip)


@dataclass
class Fault:
    kind: str  # "redis", "postgres", "worker"
    begin: float  # injected (stop started, or the SIGKILL)
    back: float | None = None  # the service is up again (for a worker: the kill itself; the other serves on)
    recovered: float | None = None  # the first successful operation of that kind after `back`
    dropped: int = 0  # worker: client sockets it took down
    restart: str = ""  # worker: whether Sanic replaced it
    note: str = ""
    first_heard: dict[str, float] = field(default_factory=dict)  # redis: each driver socket's first broadcast after

    @property
    def outage(self) -> float:
        return (self.back or self.begin) - self.begin

    @property
    def recovery(self) -> float | None:
        return None if self.recovered is None or self.back is None else self.recovered - self.back


@dataclass
class Pair:
    idx: int
    rider: Client
    driver: Client
    orphans: collections.deque[Trip] = field(default_factory=collections.deque)
    seq: int = 0
