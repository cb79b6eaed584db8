"""Group membership of this worker's sockets, and local delivery of what the broker brings in."""

from __future__ import annotations

from taxi.realtime.envelope import Envelope
from taxi.realtime.session import Session


class Hub:
    """group -> local sessions. Callbacks tell the broker when a group gains its first or loses its last member."""

    def __init__(self) -> None:
        self.members: dict[str, set[Session]] = {}
        self.users: dict[int, set[Session]] = {}  # this worker's sockets by user, for deliveries to named users

    def register(self, session: Session) -> None:
        if session.user is not None:
            self.users.setdefault(session.user, set()).add(session)

    def unregister(self, session: Session) -> None:
        sessions = self.users.get(session.user) if session.user is not None else None
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self.users[session.user]  # type: ignore[arg-type]

    def add(self, session: Session, group: str) -> bool:
        """Add a member; True when the group had no local member before (the broker must subscribe)."""
        members = self.members.get(group)
        first = members is None
        if members is None:
            members = self.members[group] = set()
        members.add(session)
        session.groups.add(group)
        return first

    def remove(self, session: Session, group: str) -> bool:
        """Remove a member; True when that was the group's last local member (the broker may unsubscribe)."""
        session.groups.discard(group)
        members = self.members.get(group)
        if members is None:
            return False
        members.discard(session)
        if members:
            return False
        del self.members[group]
        return True

    def remove_all(self, session: Session) -> list[str]:
        """Remove a session from every group; return the groups left with no local member."""
        emptied = [group for group in list(session.groups) if self.remove(session, group)]
        session.groups.clear()
        return emptied

    def deliver(self, group: str, envelope: Envelope) -> int:
        """Queue the envelope's frame to the local members of ``group`` it is for; return how many."""
        members = self.members.get(group)
        if not members:
            return 0
        if envelope.only is not None:  # a short list of users: look them up instead of scanning the group
            local = self.users
            targets = [s for user in envelope.only for s in local.get(user, ()) if s in members]
        else:
            targets = list(members)
        count = 0
        for session in targets:
            if (
                session.id == envelope.exclude
                or session.version < envelope.min_version
                or (envelope.skip and session.user in envelope.skip)
            ):
                continue
            sent = (
                session.offer_latest(envelope.latest, envelope.frame)
                if envelope.latest
                else session.offer(envelope.frame, envelope.seq)
            )
            count += sent
        return count
