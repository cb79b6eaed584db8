"""What the realtime layer reports about itself, as an interface: the composition root injects an implementation
(Prometheus, see ``taxi.metrics``), and ``NO_METER`` costs one empty call when metrics are off."""

from __future__ import annotations

from typing import Protocol

_TYPE_START = '{"type":"'


def frame_type(text: str) -> str:
    """The ``type`` of an outgoing frame without parsing it: every frame we build starts ``{"type":"<name>"``."""
    if text.startswith(_TYPE_START):
        end = text.find('"', len(_TYPE_START))
        if end > 0:
            return text[len(_TYPE_START) : end]
    return "other"


class Meter(Protocol):
    def socket_opened(self, version: int) -> None: ...

    def socket_closed(self, version: int) -> None: ...

    def frame_in(self, kind: str) -> None:
        """A client frame was read; ``kind`` is its type, or ``other`` when it is not one we know."""

    def frame_out(self, text: str) -> None:
        """A frame was written to a socket."""

    def published(self) -> None:
        """A broadcast left this worker."""

    def publish_failed(self) -> None: ...

    def delivered(self, count: int) -> None:
        """A broadcast reached ``count`` sockets of this worker."""

    def slow_consumer(self) -> None:
        """A socket was closed because it fell too far behind."""

    def broker_reconnected(self) -> None: ...


class NoMeter:
    """Metrics off: every report is dropped."""

    def socket_opened(self, version: int) -> None:
        return None

    def socket_closed(self, version: int) -> None:
        return None

    def frame_in(self, kind: str) -> None:
        return None

    def frame_out(self, text: str) -> None:
        return None

    def published(self) -> None:
        return None

    def publish_failed(self) -> None:
        return None

    def delivered(self, count: int) -> None:
        return None

    def slow_consumer(self) -> None:
        return None

    def broker_reconnected(self) -> None:
        return None


NO_METER: Meter = NoMeter()
