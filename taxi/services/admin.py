"""Administration of accounts and trips: what the reference has in Django's admin, for the ``taxi`` command.

An administrator creates users under the sign-up rules, finds them, deactivates them (no log-in, no refresh,
no socket, no trip action from then on) and reactivates them, and reads any trip.
"""

from __future__ import annotations

import uuid

from taxi.domain import STATUSES
from taxi.errors import NotFound, ValidationFailed
from taxi.queries import trips, users
from taxi.queries.trips import TripRow
from taxi.queries.users import AccountRow, UserRow
from taxi.schemas import SignUp
from taxi.security import hash_password


async def create_user(form: SignUp, bcrypt_rounds: int) -> UserRow:
    """A new active user, as a sign-up would make it (without a photo); 400 on ``username`` if it is taken."""
    hashed = await hash_password(form.password, bcrypt_rounds)
    try:
        return await users.create(form.username, hashed, form.first_name, form.last_name, form.group, None)
    except users.UsernameTaken:
        raise ValidationFailed.field("username", "A user with that username already exists.") from None


async def find_users(group: str | None = None, search: str | None = None) -> list[AccountRow]:
    """Every user (of ``group``; whose username or names contain ``search``), oldest first."""
    return await users.accounts(group, search)


async def user(username: str) -> AccountRow:
    """The user a username names, active or not; NotFound otherwise."""
    found = await users.account(username)
    if found is None:
        raise NotFound(f"No user is called {username!r}.")
    return found


async def set_active(username: str, active: bool) -> tuple[AccountRow, bool]:
    """Activate or deactivate a user; returns the user as it is now and whether anything changed.

    A deactivated user's tokens are refused at once by every guard (HTTP, socket handshake, socket messages),
    because each loads the user as stored; its refresh tokens stay refused after a reactivation.
    """
    before = await user(username)
    if before.is_active == active:
        return before, False
    await users.set_active(before.id, active)
    return before._replace(is_active=active), True


async def find_trips(status: str | None = None, username: str | None = None, limit: int = 100) -> list[TripRow]:
    """The newest trips (of ``status``; ridden or driven by ``username``), at most ``limit``."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed.field("status", f"Expected one of {', '.join(STATUSES)}, got {status!r}.")
    user_id = (await user(username)).id if username is not None else None
    return await trips.search(status, user_id, limit)


async def trip(trip_id: uuid.UUID) -> TripRow:
    found = await trips.get(trip_id)
    if found is None:
        raise NotFound(f"No trip has the id {trip_id}.")
    return found
