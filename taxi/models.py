"""The tables peewee writes to: users, and revoked and spent refresh tokens.

The schema itself is owned by ``taxi.migrations``; trips are read and written only by ``taxi.queries.trips``,
whose conditional statements peewee cannot express better than SQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import peewee
import peewee_async

from taxi.db import db
from taxi.domain import parse_timestamp, utcnow


class UtcDateTimeField(peewee.Field):
    """A timezone-aware UTC timestamp: TIMESTAMPTZ on PostgreSQL, ISO-8601 text on SQLite."""

    field_type = "TIMESTAMPTZ"

    def db_value(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC)
            if isinstance(self.model._meta.database.obj, peewee.SqliteDatabase):
                return value.isoformat(timespec="microseconds")
        return value

    def python_value(self, value: Any) -> Any:
        return parse_timestamp(value) if value is not None else None


class BaseModel(peewee_async.AioModel):
    class Meta:
        database = db
        legacy_table_names = False


class User(BaseModel):
    id = peewee.AutoField()
    username = peewee.CharField(max_length=150, unique=True)
    username_key = peewee.CharField(max_length=600, null=True, unique=True)  # taxi.usernames.key(username)
    password = peewee.CharField(max_length=128)
    first_name = peewee.CharField(max_length=150, default="")
    last_name = peewee.CharField(max_length=150, default="")
    group = peewee.CharField(max_length=10, column_name="role")
    photo = peewee.CharField(max_length=255, null=True)
    photo_thumbnail = peewee.CharField(max_length=255, null=True)
    is_active = peewee.BooleanField(default=True)
    refresh_generation = peewee.IntegerField(default=0)
    date_joined = UtcDateTimeField(default=utcnow)
    deleted_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "taxi_user"


class RevokedToken(BaseModel):
    """Refresh tokens given back at log-out, kept until they would have expired anyway."""

    jti = peewee.CharField(max_length=64, primary_key=True)
    expires_at = UtcDateTimeField()

    class Meta:
        table_name = "taxi_revoked_token"


class SpentToken(BaseModel):
    """Refresh tokens exchanged for a new pair (rotation), kept until they would have expired anyway."""

    jti = peewee.CharField(max_length=64, primary_key=True)
    user = peewee.ForeignKeyField(User, column_name="user_id", on_delete="CASCADE")
    expires_at = UtcDateTimeField()

    class Meta:
        table_name = "taxi_spent_token"
