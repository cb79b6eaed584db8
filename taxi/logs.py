"""The server's log lines: text or one JSON object per line, each with its worker and request id, and never a
credential (tokens in URLs, Authorization headers, passwords and tokens in bodies are masked in every line,
whoever logged it: our code, Sanic, or a library). Knows no Sanic: ``taxi.app`` installs it.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import multiprocessing
import re
import sys
from collections.abc import Iterator
from typing import Any

# The request being served by this task, for every line logged while serving it (a socket's task inherits it).
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("taxi_request_id", default=None)

MASK = "[redacted]"
_SECRETS = (
    # A JWT anywhere: three base64url parts, the first two starting with '{"' encoded.
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"), MASK),
    # Bearer credentials, in a header dump or a message.
    (re.compile(r"(?i)(bearer\s+)[^\s'\",;]+"), rf"\g<1>{MASK}"),
    # token=, access=, refresh=, password…= in a query string or a form body.
    (re.compile(r"(?i)\b((?:access_)?token|access|refresh|password\d?)=[^&\s'\"]+"), rf"\g<1>={MASK}"),
    # The same names as JSON members.
    (re.compile(r'(?i)"((?:access_)?token|access|refresh|password\d?)"(\s*:\s*)"(?:[^"\\]|\\.)*"'), rf'"\1"\2"{MASK}"'),
)

_TEXT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
_SANIC_LOGGERS = ("sanic.root", "sanic.error", "sanic.access", "sanic.server", "sanic.websockets")


def redact(text: str) -> str:
    """``text`` with every credential we know the shape of replaced by ``[redacted]``."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class TextFormatter(logging.Formatter):
    """The classic line, masked, with ``[request <id>]`` when a request is being served."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = request_id.get()
        if rid is not None and "\n" not in line:
            line = f"{line} [request {rid}]"
        return redact(line)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, message, worker, request_id, and the fields a
    caller passed as ``extra={"fields": {...}}``; a traceback goes in ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "worker": multiprocessing.current_process().name,
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JSONFormatter() if log_format == "json" else TextFormatter()


def configure(log_format: str) -> None:
    """Every line this process logs goes through one masked formatter of ``log_format`` (``text`` or ``json``).

    Sanic's loggers keep their handlers (Sanic picks their streams) with our formatter, and stop propagating, so
    nothing is written twice; everything else (ours, asyncio, websockets, the database drivers) reaches one
    handler on the root logger, on stderr. Idempotent: each worker calls it when it builds the app.
    """
    chosen = formatter(log_format)
    for name in _SANIC_LOGGERS:
        logger = logging.getLogger(name)
        logger.propagate = False
        for handler in logger.handlers:
            handler.setFormatter(chosen)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "taxi", False)]
    if ours:
        ours[0].setFormatter(chosen)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.taxi = True  # type: ignore[attr-defined]
        handler.setFormatter(chosen)
        root.addHandler(handler)
    logging.getLogger("taxi").setLevel(logging.INFO)


class _Hold(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def held() -> Iterator[list[logging.LogRecord]]:
    """Keep what is logged inside (before ``configure`` could run: reading the settings that choose the format)
    for ``replay`` once the format is set, instead of letting Python print it bare."""
    hold = _Hold()
    root = logging.getLogger()
    root.addHandler(hold)
    try:
        yield hold.records
    finally:
        root.removeHandler(hold)


def replay(records: list[logging.LogRecord]) -> None:
    for record in records:
        logging.getLogger(record.name).handle(record)
