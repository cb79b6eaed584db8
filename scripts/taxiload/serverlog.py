"""What a server's log says: errors, WARNING lines grouped by message, and other noise worth a look."""

from __future__ import annotations

import collections
import re

# How WARNING messages are masked before grouping: (pattern, replacement), in order.
BENCH_MASKS = ((r"\b[0-9a-f]{8,}\b|\d+", "#"),)
SOAK_MASKS = (
    (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>"),
    (r"0x[0-9a-f]+", "<addr>"),
    (r"\b(taxi_soak_)[0-9a-f]+", r"\1<hex>"),
    (r"\d+", "#"),
)


def log_problems(text: str) -> str:
    """A summary of the exceptions and errors in a server's log, empty if there are none."""
    found = collections.Counter(re.findall(r"^([\w.]+(?:Error|Exception|Cancelled|Exit))\b", text, re.M))
    found.update(re.findall(r"^.*\b(ERROR|CRITICAL)\b", text, re.M))
    found.update(re.findall(r"^(Task was destroyed but it is pending)!", text, re.M))
    return ", ".join(f"{n} x {name}" for name, n in found.most_common())


def log_warnings(text: str, limit: int = 6, width: int = 160, masks: tuple[tuple[str, str], ...] = BENCH_MASKS) -> str:
    """The WARNING lines of a server's log, grouped by their message with ``masks`` applied (ids, numbers)."""
    found: collections.Counter[str] = collections.Counter()
    for line in re.findall(r"^.*\bWARNING\b.*$", text, re.M):
        message = re.split(r"\bWARNING\b:?\]?:?\s*", line, maxsplit=1)[-1]
        for pattern, replacement in masks:
            message = re.sub(pattern, replacement, message)
        found[message[:width]] += 1
    return "; ".join(f"{n} x {message!r}" for message, n in found.most_common(limit))


def log_noise(text: str) -> str:
    """What else in a server log deserves a look: unretrieved exceptions, resource warnings, unclosed connections."""
    found: collections.Counter[str] = collections.Counter()
    for needle in (
        "Future exception was never retrieved",
        "Task exception was never retrieved",
        "Task was destroyed but it is pending",
        "ResourceWarning",
        "Unclosed connection",
    ):
        if n := text.count(needle):
            found[needle] = n
    return ", ".join(f"{n} x {what!r}" for what, n in found.most_common())
