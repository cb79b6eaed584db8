"""Group membership of this worker's sockets, and local delivery of what the broker brings in."""

from __future__ import annotations

from taxi.realtime.session import Session


class Hub:
    """group -> local sessions. Callbacks tell the broker when a group gains its first or loses its last member."""

    def __init__(self) -> None:
        self.members: dict[str, set[Session]] = {}

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

    def deliver(self, group: str, frame: str, exclude: str | None = None) -> int:
        """Queue ``frame`` to every local member of ``group`` but the session ``exclude``; return how many."""
        count = 0
        for session in tuple(self.members.get(group, ())):
            if session.id != exclude and session.offer(frame):
                count += 1
        return count
