"""The user and revoked-token statements, on both backends."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import NamedTuple

import pytest

from taxi import db as dbm
from taxi.queries import rows, users


@pytest.fixture
async def connected(database_url):
    database = await dbm.connect(database_url, pool_size=4)
    yield database
    await database.aio_close()


async def test_a_user_is_created_once_and_found_by_id_and_username(connected):
    user = await users.create("ana", "hash", "Ana", "Lima", "driver", "photos/x.png")
    assert user == users.UserRow(user.id, "ana", "Ana", "Lima", "driver", "photos/x.png")
    assert await users.load_active(user.id) == user
    assert await users.find_for_login("ana") == (user, "hash", 0)
    assert await users.find_for_login("nobody") is None
    with pytest.raises(users.UsernameTaken):
        await users.create("ana", "hash", "", "", "rider", None)
    assert user.public("https://cdn.example/media")["photo"] == "https://cdn.example/media/photos/x.png"


async def test_a_deactivated_user_is_not_found(connected):
    user = await users.create("bo", "hash", "", "", "rider", None)
    await dbm.execute(dbm.SQL("UPDATE taxi_user SET is_active = {p} WHERE id = {p}"), (False, user.id))
    assert await users.load_active(user.id) is None
    assert await users.find_for_login("bo") is None


async def test_revoked_tokens_are_remembered_until_they_expire(connected):
    jti, old = uuid.uuid4().hex, uuid.uuid4().hex
    now = dt.datetime.now(dt.UTC)
    await users.revoke(old, now - dt.timedelta(seconds=1))  # already expired: swept by the next revocation
    await users.revoke(jti, now + dt.timedelta(hours=1))
    await users.revoke(jti, now + dt.timedelta(hours=1))  # twice is fine
    assert await users.is_revoked(jti)
    assert not await users.is_revoked(old)


class Pair(NamedTuple):
    a: int
    b: int


def test_a_statement_and_its_row_type_cannot_drift():
    assert rows.select_list({"b": "t.y", "a": "t.x"}, Pair) == "t.x, t.y"
    with pytest.raises(ValueError, match="disagree"):
        rows.select_list({"a": "t.x"}, Pair)
    assert rows.split((1, 2, 3, 4), Pair, Pair) == [Pair(1, 2), Pair(3, 4)]
    with pytest.raises(ValueError, match="not Pair"):
        rows.split((1, 2, 3), Pair)


async def test_the_database_keeps_usernames_unique_whatever_their_case(connected):
    # Below the schemas: two sign-ups racing with "Ana" and "ANA" both pass validation, the database decides.
    await users.create("Ana", "hash", "", "", "rider", None)
    with pytest.raises(users.UsernameTaken):
        await users.create("ANA", "hash", "", "", "rider", None)
    assert (await users.find_for_login("aNA"))[0].username == "Ana"
