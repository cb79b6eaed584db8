"""The per-worker relay: joins and leaves go to the hub and, when a group's local membership starts or ends,
to the broker; publishing wraps the frame with its origin so the sender (answered directly) is skipped."""

from __future__ import annotations

import logging

from taxi.realtime.broker import Broker
from taxi.realtime.hub import Hub, envelope
from taxi.realtime.session import Session

log = logging.getLogger("taxi.realtime")


class Relay:
    def __init__(self, hub: Hub, broker: Broker) -> None:
        self.hub = hub
        self.broker = broker
        self.sessions: set[Session] = set()  # every open socket of this worker, in groups or not

    def open(self, session: Session) -> None:
        self.sessions.add(session)

    def close_all(self, code: int, reason: str) -> int:
        """Close every socket of this worker (server shutdown: 1001, going away); return how many."""
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
        for group in self.hub.remove_all(session):
            self.broker.unsubscribe(group)

    async def publish(self, group: str, text: str, exclude: Session | None = None) -> None:
        """Broadcast one serialized frame to every member of ``group`` on every worker (but ``exclude``)."""
        await self.broker.publish(group, envelope(text, exclude.id if exclude else None))
