"""The tables, as peewee models bound to the ``db`` proxy. The schema itself is owned by ``taxi.migrations``."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import peewee
import peewee_async

from taxi.db import db

RIDER = "rider"
DRIVER = "driver"
GROUPS = (RIDER, DRIVER)

REQUESTED = "REQUESTED"
STARTED = "STARTED"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
STATUSES = (REQUESTED, STARTED, IN_PROGRESS, COMPLETED)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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


def parse_timestamp(value: Any) -> dt.datetime:
    """A UTC datetime from what either backend returns (datetime on PostgreSQL, text on SQLite)."""
    stamp: dt.datetime = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC)


class BaseModel(peewee_async.AioModel):
    class Meta:
        database = db
        legacy_table_names = False


class User(BaseModel):
    id = peewee.AutoField()
    username = peewee.CharField(max_length=150, unique=True)
    password = peewee.CharField(max_length=128)
    first_name = peewee.CharField(max_length=150, default="")
    last_name = peewee.CharField(max_length=150, default="")
    group = peewee.CharField(max_length=10, column_name="role")
    photo = peewee.CharField(max_length=255, null=True)
    is_active = peewee.BooleanField(default=True)
    date_joined = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "taxi_user"


class Trip(BaseModel):
    id = peewee.UUIDField(primary_key=True, default=uuid.uuid4)
    created = UtcDateTimeField(default=utcnow)
    updated = UtcDateTimeField(default=utcnow)
    pick_up_address = peewee.CharField(max_length=255)
    drop_off_address = peewee.CharField(max_length=255)
    status = peewee.CharField(max_length=20, default=REQUESTED)
    rider = peewee.ForeignKeyField(User, null=True, backref="trips_as_rider", on_delete="SET NULL")
    driver = peewee.ForeignKeyField(User, null=True, backref="trips_as_driver", on_delete="SET NULL")

    class Meta:
        table_name = "taxi_trip"


class RevokedToken(BaseModel):
    """Refresh tokens given back at log-out, kept until they would have expired anyway."""

    jti = peewee.CharField(max_length=64, primary_key=True)
    expires_at = UtcDateTimeField()

    class Meta:
        table_name = "taxi_revoked_token"
