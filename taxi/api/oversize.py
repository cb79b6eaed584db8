"""Which status a request head over Sanic's limit gets: 414 when its request line is what made it too large,
431 when its header fields did (Sanic raises one PayloadTooLarge for both, answered 413 by default)."""

from __future__ import annotations

from sanic import Request

# Sanic's message when the head (request line plus header fields) is over REQUEST_MAX_HEADER_SIZE.
_HEAD_MESSAGE = "Request header exceeds the size limit"


def head_too_large(request: Request, exception: Exception) -> tuple[int, str] | None:
    """(status, detail) for a request head over the limit, or None when ``exception`` is about something else.

    The head is still in the connection's receive buffer when Sanic gives up on it: its first line is the request
    line. Over half of the limit means the URL is to blame (414); otherwise the header fields are (431).
    """
    if str(exception) != _HEAD_MESSAGE:
        return None
    limit = int(request.app.config.REQUEST_MAX_HEADER_SIZE)
    protocol = request.transport.get_protocol() if request.transport else None
    buffer = bytes(getattr(protocol, "recv_buffer", b"") or b"")
    end = buffer.find(b"\r\n")
    line = len(buffer) if end == -1 else end
    if line > limit // 2:
        return 414, f"Request URL is too long: the request line may have at most {limit // 2} bytes."
    return 431, f"Request header fields are too large: at most {limit} bytes in all are accepted."
