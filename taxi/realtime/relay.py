"""The per-worker relay: joins and leaves go to the hub and, when a group's local membership starts or ends,
to the broker; publishing wraps the frame with its origin so the sender (answered directly) is skipped."""

from __future__ import annotations

from collections.abc import Callable

from taxi.errors import BrokerUnavailable
from taxi.realtime.broker import CONTROL, Broker, Deliver
from taxi.realtime.envelope import unwrap, wrap
from taxi.realtime.hub import Hub
from taxi.realtime.meter import NO_METER, Meter
from taxi.realtime.session import Session


class Relay:
    """One per worker. ``make_broker`` gets the relay's ``deliver``, which the broker calls for each event."""

    def __init__(
        self,
        hub: Hub,
        make_broker: Callable[[Deliver], Broker],
        meter: Meter = NO_METER,
        resync: str | None = None,
    ) -> None:
        self.hub = hub
        self.meter = meter
        self.broker = make_broker(self.deliver)
        self.broker.on_reconnect = self.reconnected
        self.sessions: set[Session] = set()  # every open socket of this worker, in groups or not
        self.closed_with: tuple[int, str] | None = None  # set by close_all: the worker is stopping
        self.resync = resync  # the frame that tells a version 2 socket it may have missed events
        # Told of each socket an envelope took out of a group (the group ended, or its user is no longer part).
        self.on_leave: Callable[[Session, str], object] | None = None

    def reconnected(self) -> int:
        """The broker's subscriptions are back after an outage: events published meanwhile never came, so every
        version 2 socket is told to resynchronise (version 1 clients cannot; they re-fetch when they reconnect)."""
        if self.resync is None:
            return 0
        return sum(session.offer(self.resync) for session in list(self.sessions) if session.version >= 2)

    def open(self, session: Session) -> None:
        if self.closed_with is not None:  # opened while the worker stops: close it now, not at the grace's end
            session.close(*self.closed_with)
            return
        self.sessions.add(session)
        self.hub.register(session)

    async def close_user(self, user: int, code: int, reason: str) -> None:
        """Close every socket of ``user`` on every worker (an account deleted); BrokerUnavailable if the other
        workers cannot be told (this worker's sockets of the user are closed all the same)."""
        payload = f"close {user} {code} {reason}"
        try:
            await self.broker.publish_control(payload)
        except BaseException:
            self._control(payload)
            raise

    def _control(self, payload: str) -> int:
        """Carry out a control message; return how many sockets it closed."""
        action, _, rest = payload.partition(" ")
        if action != "close":
            return 0
        user, code, reason = rest.split(" ", 2)
        sessions = list(self.hub.users.get(int(user), ()))
        for session in sessions:
            session.close(int(code), reason)
        return len(sessions)

    def close_all(self, code: int, reason: str) -> int:
        """Close every socket of this worker, and every later one (server shutdown: 1001); return how many."""
        self.closed_with = (code, reason)
        sessions = list(self.sessions)
        for session in sessions:
            session.close(code, reason)
        return len(sessions)

    async def join(self, session: Session, group: str) -> None:
        """Make ``session`` a member of ``group``; on return it will hear every later broadcast to it.

        Raises BrokerUnavailable when the broker cannot confirm the subscription.
        """
        self.hub.add(session, group)
        # Always ask: returns at once once confirmed, and waits (with the first joiner) while pending.
        await self.broker.subscribe(group)

    def leave(self, session: Session, group: str) -> None:
        """Remove a session from one group (synchronous, like ``leave_all``)."""
        if self.hub.remove(session, group):
            self.broker.unsubscribe(group)

    def leave_all(self, session: Session) -> None:
        """Remove a closing session everywhere; synchronous, so it is safe in a cancelled task's ``finally``."""
        self.sessions.discard(session)
        self.hub.unregister(session)
        for group in self.hub.remove_all(session):
            self.broker.unsubscribe(group)

    async def publish(
        self,
        group: str,
        text: str,
        exclude: Session | None = None,
        end: bool = False,
        *,
        min_version: int = 1,
        only: frozenset[int] | None = None,
        skip: frozenset[int] = frozenset(),
        latest: str | None = None,
        seq: tuple[str, int] | None = None,
        leave: frozenset[int] = frozenset(),
    ) -> None:
        """Broadcast one serialized frame to the members of ``group`` on every worker (but ``exclude``).

        ``end``: this is the group's last event; every worker drops the group once it has delivered it.
        ``min_version``, ``only``, ``skip`` narrow who gets it; ``latest`` makes it supersede the previous frame
        of that key (see ``Session.offer_latest``); ``seq`` numbers it in a sequence (see ``Session.offer``);
        ``leave``: the sockets of these users leave the group once it is delivered.
        """
        payload = wrap(
            text,
            exclude.id if exclude else None,
            end,
            min_version=min_version,
            only=only,
            skip=skip,
            latest=latest,
            seq=seq,
            leave=leave,
        )
        try:
            await self.broker.publish(group, payload)
        except BrokerUnavailable:
            self.meter.publish_failed()
            raise
        self.meter.published()

    def deliver(self, group: str, payload: str) -> int:
        """What the broker brings in: hand it to the local members, then take out of the group those the envelope
        says leave it (everyone when the group has ended), telling ``on_leave``."""
        if group == CONTROL:
            return self._control(payload)
        envelope = unwrap(payload)
        count = self.hub.deliver(group, envelope)
        self.meter.delivered(count)
        if envelope.end or envelope.leave:
            for session in list(self.hub.members.get(group, ())):
                if envelope.end or session.user in envelope.leave:
                    self.leave(session, group)
                    if self.on_leave is not None:
                        self.on_leave(session, group)
        return count
