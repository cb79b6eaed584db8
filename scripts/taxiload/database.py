"""The throw-away database and Redis prefix of a load run: ``taxi_<kind>_<hex>``, migrated, and removed after it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from taxiload.harness import SetupError, migrate

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"  # trust auth
REDIS_URL = "redis://127.0.0.1:6379/0"


def admin_sql(server: str, sql: str) -> None:
    """One statement on the ``postgres`` database of ``server``, autocommit, on a connection of its own."""
    import psycopg2

    conn = psycopg2.connect(f"{server}/postgres", connect_timeout=10)
    conn.autocommit = True
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def drop_redis_keys(prefix: str, url: str = REDIS_URL) -> None:
    try:
        import redis

        client = redis.Redis.from_url(url)
        if keys := list(client.scan_iter(match=prefix + "*", count=1000)):
            client.delete(*keys)
    except Exception as exc:  # best effort: keys under a random prefix harm nobody
        print(f"(could not delete the Redis keys {prefix}*: {exc})")


class ScratchDatabase:
    """A database ``taxi_<kind>_<hex>`` on ``pg_server`` migrated with `python -m taxi migrate`, the environment of a
    server on it (Redis keys under the prefix ``taxi_<kind>_<hex>:``), and the clean-up.

    Use as a context manager: the database is dropped WITH (FORCE) on exit, even after a failure or Ctrl-C, and,
    with ``drop_keys``, the Redis keys under its prefix are deleted.
    """

    def __init__(
        self,
        kind: str,
        log_dir: Path,
        env: dict[str, str] | None = None,
        pg_server: str = PG_SERVER,
        redis_url: str = REDIS_URL,
        drop_keys: bool = True,
    ) -> None:
        self.name = f"taxi_{kind}_{secrets.token_hex(4)}"
        self.pg_server, self.redis_url, self.drop_keys = pg_server, redis_url, drop_keys
        self.dsn = f"{pg_server}/{self.name}"
        self.redis_prefix = f"{self.name}:"
        self.env = (
            dict(os.environ)
            | {
                "TAXI_DATABASE_URL": self.dsn,
                "TAXI_REDIS_URL": redis_url,
                "TAXI_REDIS_PREFIX": self.redis_prefix,
                "TAXI_SECRET_KEY": secrets.token_hex(32),
                "TAXI_BCRYPT_ROUNDS": "4",  # log-in speed is not what is measured
                "TAXI_MEDIA_ROOT": str(log_dir / "media"),
            }
            | (env or {})
        )

    def __enter__(self) -> ScratchDatabase:
        import psycopg2

        try:
            admin_sql(self.pg_server, f'CREATE DATABASE "{self.name}"')
        except psycopg2.OperationalError as exc:
            raise SetupError(f"PostgreSQL is not reachable at {self.pg_server}: {exc}") from None
        try:
            migrate(self.env)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            admin_sql(self.pg_server, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            if self.drop_keys:
                drop_redis_keys(self.redis_prefix, self.redis_url)
