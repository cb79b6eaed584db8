"""The words of the domain, with no I/O: the two roles, the trip statuses, and UTC time."""

from __future__ import annotations

import datetime as dt
from typing import Any

RIDER = "rider"
DRIVER = "driver"
GROUPS = (RIDER, DRIVER)

REQUESTED = "REQUESTED"
STARTED = "STARTED"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
CANCELED = "CANCELED"
STATUSES = (REQUESTED, STARTED, IN_PROGRESS, COMPLETED, CANCELED)
OPEN = (REQUESTED, STARTED, IN_PROGRESS)  # a rider's trip in one of these counts against its open-trip limit
FINAL = (COMPLETED, CANCELED)  # nothing more happens to the trip: its group ends


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_timestamp(value: Any) -> dt.datetime:
    """A UTC datetime from what either backend returns (datetime on PostgreSQL, text on SQLite)."""
    stamp: dt.datetime = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC)
