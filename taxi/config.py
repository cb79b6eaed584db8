"""Settings: every knob of the server, read once from ``TAXI_*`` environment variables.

Nothing else in the package reads the environment. Importing this module has no side effects;
``Settings.from_env`` may create the embedded default's secret file (see ``resolve_secret``).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger("taxi.config")

DEFAULT_DATABASE_URL = "sqlite:///taxi.sqlite3"
MIN_SECRET_BYTES = 32


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable and what it expected."""


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed ``TAXI_DATABASE_URL``: ``postgresql://user[:pw]@host:port/db`` or ``sqlite:///path``."""

    backend: str  # "postgresql" | "sqlite"
    name: str  # database name, or the SQLite file path
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        parts = urlsplit(url)
        if parts.scheme in ("postgresql", "postgres"):
            name = parts.path.lstrip("/")
            if not name:
                raise ConfigError(f"TAXI_DATABASE_URL: expected a database name in {url!r}")
            return cls(
                backend="postgresql",
                name=unquote(name),
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 5432,
                user=unquote(parts.username or "postgres"),
                password=unquote(parts.password or ""),
            )
        if parts.scheme == "sqlite":
            # sqlite:///relative/path and sqlite:////absolute/path, as in SQLAlchemy.
            path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
            if not path or path == ":memory:":
                raise ConfigError(
                    f"TAXI_DATABASE_URL: expected sqlite:///<file path>, got {url!r} "
                    "(an in-memory database cannot be shared between connections)"
                )
            return cls(backend="sqlite", name=path)
        raise ConfigError(f"TAXI_DATABASE_URL: expected a postgresql:// or sqlite:/// URL, got {url!r}")

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    def redacted(self) -> str:
        if self.is_sqlite:
            return f"sqlite:///{self.name}"
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.name}"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the embedded defaults of a first run."""

    database: DatabaseURL = field(default_factory=lambda: DatabaseURL.parse(DEFAULT_DATABASE_URL))
    secret_key: str = ""
    redis_url: str | None = None
    redis_prefix: str = "taxi:"
    media_root: Path = Path("media")
    public_url: str | None = None
    access_token_lifetime: int = 300
    refresh_token_lifetime: int = 86400
    cors_origins: tuple[str, ...] = ()
    bcrypt_rounds: int = 12
    db_pool_size: int = 20
    max_photo_bytes: int = 5 * 1024 * 1024
    max_photo_pixels: int = 16_000_000
    trip_list_default: int = 100
    trip_list_max: int = 500
    ws_queue_size: int = 256
    ws_max_frame: int = 64 * 1024
    login_attempts_per_user: int = 10
    login_attempts_per_address: int = 50
    login_window: int = 60
    signups_per_address: int = 20
    proxies_count: int = 0

    @property
    def max_request_bytes(self) -> int:
        # A sign-up is a photo plus a few short fields; leave room for the multipart framing.
        return self.max_photo_bytes + 256 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``TAXI_*`` variables (``os.environ`` by default); raise ConfigError if invalid."""
        env = os.environ if env is None else env
        database = DatabaseURL.parse(env.get("TAXI_DATABASE_URL") or DEFAULT_DATABASE_URL)
        secret = resolve_secret(env.get("TAXI_SECRET_KEY", ""), database)
        origins = tuple(o.strip().rstrip("/") for o in env.get("TAXI_CORS_ORIGINS", "").split(",") if o.strip())
        public_url = (env.get("TAXI_PUBLIC_URL") or "").rstrip("/") or None
        trip_list_max = _int(env, "TAXI_TRIP_LIST_MAX", 500, 1)
        return cls(
            database=database,
            secret_key=secret,
            redis_url=env.get("TAXI_REDIS_URL") or None,
            redis_prefix=env.get("TAXI_REDIS_PREFIX", "taxi:"),
            media_root=Path(env.get("TAXI_MEDIA_ROOT") or "media"),
            public_url=public_url,
            access_token_lifetime=_int(env, "TAXI_ACCESS_TOKEN_LIFETIME", 300, 1),
            refresh_token_lifetime=_int(env, "TAXI_REFRESH_TOKEN_LIFETIME", 86400, 1),
            cors_origins=origins,
            bcrypt_rounds=_int(env, "TAXI_BCRYPT_ROUNDS", 12, 4, 31),
            db_pool_size=_int(env, "TAXI_DB_POOL_SIZE", 20, 1),
            trip_list_default=min(_int(env, "TAXI_TRIP_LIST_DEFAULT", 100, 1), trip_list_max),
            trip_list_max=trip_list_max,
            ws_queue_size=_int(env, "TAXI_WS_QUEUE_SIZE", 256, 1),
            login_attempts_per_user=_int(env, "TAXI_LOGIN_ATTEMPTS_PER_USER", 10, 1),
            login_attempts_per_address=_int(env, "TAXI_LOGIN_ATTEMPTS_PER_ADDRESS", 50, 1),
            login_window=_int(env, "TAXI_LOGIN_WINDOW", 60, 1),
            signups_per_address=_int(env, "TAXI_SIGNUPS_PER_ADDRESS", 20, 1),
            proxies_count=_int(env, "TAXI_PROXIES_COUNT", 0, 0),
        )


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name}: expected an integer {bound}, got {value}")
    return value


def resolve_secret(given: str, database: DatabaseURL) -> str:
    """Return the JWT signing key: the given one, or (embedded default only) one kept beside the SQLite file.

    Every worker process and every restart must sign with the same key, so a generated key is written
    once (atomically, mode 0600) and read back by everyone after.
    """
    if given:
        if len(given.encode()) < MIN_SECRET_BYTES:  # a short HS256 key can be brute-forced offline
            raise ConfigError(f"TAXI_SECRET_KEY: expected at least {MIN_SECRET_BYTES} bytes, got {len(given.encode())}")
        return given
    if not database.is_sqlite:
        raise ConfigError("TAXI_SECRET_KEY: required with PostgreSQL (at least 32 random bytes)")
    path = Path(database.name).resolve().parent / ".taxi-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".taxi-secret.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # atomic: exactly one process wins, the rest read the winner's key
            log.warning("TAXI_SECRET_KEY is not set: generated a signing key in %s (set it in production)", path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_text().strip()
    if not key:
        raise ConfigError(f"TAXI_SECRET_KEY: unset, and the key file {path} is empty; delete it or set the variable")
    return key
