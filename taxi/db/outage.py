"""What counts as the database being unavailable, turned into the one error clients see for it (503).

peewee translates driver errors into ``peewee.OperationalError``/``InterfaceError`` (through its private
``__exception_wrapper__``, a contract the tests pin); a refused or timed-out connection may also surface as
``OSError`` or ``TimeoutError``. Everything else is a bug and stays what it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import peewee

from taxi.errors import ServiceUnavailable

OUTAGE = (peewee.OperationalError, peewee.InterfaceError, OSError, TimeoutError)


def database_unavailable(cause: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable("Service temporarily unavailable; try again shortly.", retry_after=1, cause=repr(cause))


@contextlib.contextmanager
def outage_as_unavailable() -> Iterator[None]:
    """Raise ServiceUnavailable (from the original error) for anything that means "the database is away"."""
    try:
        yield
    except OUTAGE as exc:
        raise database_unavailable(exc) from exc


def is_lost_connection(exc: BaseException) -> bool:
    """A RuntimeError from a connection whose transport is gone (uvloop: "the handler is closed"), which
    peewee does not translate. Any other RuntimeError is a programming error."""
    return isinstance(exc, RuntimeError) and "closed" in str(exc)
