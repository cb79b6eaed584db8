"""The trip-event policy: which groups a socket joins, and which groups hear which trip event.

Groups: ``drivers`` (every connected driver) and ``trip:<id>`` (the trip's rider and driver). A request reaches
only the drivers of its audience (nearby dispatch decides who; see ``Audience``), and its acceptance only those
it reached. A driver's position reaches its trip's rider on protocol version 2 only. A socket joins
its groups before its first message is read; a rider joins a new trip's group before the trip exists, so
no event about it can be missed. Persist, then publish: an event is sent only about a committed change,
to its author directly and to everyone else once through the publisher. The publisher is a small interface
(the realtime relay in the server, a fake in tests); nothing here knows about sockets or Sanic.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from taxi.domain import DRIVER, FINAL, STARTED
from taxi.errors import BrokerUnavailable
from taxi.protocol import DRIVER_LOCATION, ECHO, error_frame, frame

log = logging.getLogger("taxi.socket")

DRIVERS = "drivers"


_TRIP_PREFIX = "trip:"


def trip_group(trip_id: str) -> str:
    return _TRIP_PREFIX + trip_id


@dataclass(frozen=True)
class Audience:
    """The drivers a request goes to: ``only`` these users (None: every driver), less the ``skip`` ones."""

    only: frozenset[int] | None = None
    skip: frozenset[int] = frozenset()

    @property
    def nobody(self) -> bool:
        return self.only is not None and not self.only


EVERY_DRIVER = Audience()
NO_DRIVER = Audience(only=frozenset())


class Member(Protocol):
    """One connected socket, as the policy sees it."""

    label: str

    def offer(self, text: str, seq: tuple[str, int] | None = None) -> bool:
        """Send ``text`` to this socket (queued, never blocking); ``seq``: (trip id, version) of a trip frame,
        dropped if the socket already has that version or a later one."""


M = TypeVar("M", bound=Member)
M_contra = TypeVar("M_contra", bound=Member, contravariant=True)


class Publisher(Protocol[M_contra]):
    async def join(self, member: M_contra, group: str) -> None:
        """Return once ``member`` hears every later event of ``group``; BrokerUnavailable if that cannot be."""

    def leave(self, member: M_contra, group: str) -> None: ...

    async def publish(
        self,
        group: str,
        text: str,
        exclude: M_contra | None = None,
        end: bool = False,
        *,
        min_version: int = 1,
        only: frozenset[int] | None = None,
        skip: frozenset[int] = frozenset(),
        latest: str | None = None,
        seq: tuple[str, int] | None = None,
        leave: frozenset[int] = frozenset(),
    ) -> None:
        """Send ``text`` to the members of ``group`` but ``exclude``; ``end``: the group's last event.

        Narrowed to sockets of at least ``min_version``, of the users ``only`` (when given) and not ``skip``;
        ``latest``: the frame supersedes an unsent one of the same key; ``seq``: (key, number) of a frame in a
        sequence, dropped for a socket that has that number or a later one; ``leave``: once delivered, the sockets
        of these users leave the group."""


def trip_of(group: str) -> str | None:
    """The trip id of a trip's group, None for any other group."""
    return group[len(_TRIP_PREFIX) :] if group.startswith(_TRIP_PREFIX) else None


def groups_on_connect(role: str, open_trip_ids: list[str]) -> list[str]:
    """The groups a socket belongs to from the start: ``drivers`` for a driver, and its open trips'."""
    return ([DRIVERS] if role == DRIVER else []) + [trip_group(t) for t in open_trip_ids]


class TripEvents(Generic[M]):
    """The policy applied through one publisher."""

    def __init__(self, publisher: Publisher[M]) -> None:
        self.publisher = publisher

    async def connected(self, member: M, role: str, open_trip_ids: list[str]) -> None:
        """Join the socket's groups; BrokerUnavailable if any cannot be joined (the socket must be refused)."""
        for group in groups_on_connect(role, open_trip_ids):
            await self.publisher.join(member, group)

    async def before_request(self, member: M, trip_id: str) -> None:
        """The rider joins the group of a trip about to be stored: once a driver can see the trip, the rider
        must already hear what the driver does with it."""
        try:
            await self.publisher.join(member, trip_group(trip_id))
        except BrokerUnavailable:
            pass  # the trip is still stored; the broadcast failure is reported to the rider after

    def request_failed(self, member: M, trip_id: str) -> None:
        self.publisher.leave(member, trip_group(trip_id))

    async def requested(self, member: M, trip: dict[str, Any], audience: Audience | None) -> None:
        """A trip was requested: its rider and the drivers of ``audience`` hear of it (None: the audience could
        not be worked out, so nobody else hears now, and the rider is told)."""
        await self._deliver(member, trip, drivers=audience, what="The trip was requested")

    async def updated(self, member: M, trip: dict[str, Any], reached: Audience = EVERY_DRIVER) -> None:
        """A driver moved a trip: its rider hears it; on acceptance the drivers the request ``reached`` too
        (the request is gone)."""
        await self.changed(member, trip, drivers=reached if trip["status"] == STARTED else NO_DRIVER)

    async def changed(
        self,
        member: M | None,
        trip: dict[str, Any],
        *,
        drivers: Audience | None = NO_DRIVER,
        leaving: int | None = None,
    ) -> None:
        """``member`` changed a trip: everyone in its group hears the trip as it is now, and so do ``drivers``.

        A trip in a final status ends its group on every worker; the sockets of ``leaving`` (a driver who handed
        the trip back) leave it on every worker.
        """
        end = trip["status"] in FINAL  # nothing more happens to it: every worker drops its group once delivered
        gone = frozenset() if leaving is None else frozenset({leaving})
        await self._deliver(member, trip, drivers=drivers, end=end, leave=gone, what="The trip was updated")
        if member is not None and (end or gone):
            self.publisher.leave(member, trip_group(trip["id"]))  # at once here, even if the broker is away

    async def follow(self, member: M, trip_ids: list[str]) -> None:
        """Join the groups of these trips (a socket catching up on trips opened elsewhere meanwhile)."""
        for trip_id in trip_ids:
            await self.publisher.join(member, trip_group(trip_id))

    async def driver_moved(self, trip_id: str, location: dict[str, Any]) -> None:
        """A driver's accepted fix, to its active trip's rider (version 2 sockets; the newest supersedes)."""
        await self.publisher.publish(
            trip_group(trip_id),
            frame(DRIVER_LOCATION, {"trip_id": trip_id, **location}),
            min_version=2,
            latest=f"location:{trip_id}",
        )

    async def _deliver(
        self,
        member: M | None,
        trip: dict[str, Any],
        *,
        drivers: Audience | None,
        what: str,
        end: bool = False,
        leave: frozenset[int] = frozenset(),
    ) -> None:
        """The change is committed: join its group, answer the author, then tell everyone else once.

        Without ``member`` (a change made over HTTP) the author is answered by the caller and nobody is excluded.
        """
        group = trip_group(trip["id"])
        text = frame(ECHO, trip)
        seq = (trip["id"], trip["version"])  # per trip, a socket only ever gets newer versions
        replied = member is None
        try:
            if member is not None:
                await self.publisher.join(member, group)
                member.offer(text, seq)
                replied = True
            # Two groups, two channels, each frame numbered: neither publish needs to wait for the other.
            sends = [self.publisher.publish(group, text, exclude=member, end=end, seq=seq, leave=leave)]
            if drivers is not None and not drivers.nobody:
                sends.append(
                    self.publisher.publish(DRIVERS, text, exclude=member, only=drivers.only, skip=drivers.skip, seq=seq)
                )
            await asyncio.gather(*sends)
            if drivers is None:
                raise BrokerUnavailable("the drivers near the pick-up could not be found")
        except BrokerUnavailable as exc:
            log.warning("%s: broadcast failed: %s", member.label if member else "HTTP", exc)
            if member is None:
                return  # the HTTP answer is the trip as stored; the others see it when they next fetch
            if not replied:
                member.offer(text, seq)  # it is committed: the author must still learn the trip as stored
            member.offer(
                error_frame(
                    "unavailable",
                    f"{what} and saved, but others could not be notified; "
                    "they will see it when they next fetch their trips.",
                )
            )
