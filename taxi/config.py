"""Settings: every knob of the server, read once from ``TAXI_*`` environment variables.

Nothing else in the package reads the environment. Importing this module has no side effects;
``Settings.from_env`` may create the embedded default's secret file (see ``resolve_secret``).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

log = logging.getLogger("taxi.config")

DEFAULT_DATABASE_URL = "sqlite:///taxi.sqlite3"
MIN_SECRET_BYTES = 32
DEFAULT_MEDIA_ROOT = Path("media")
LOG_FORMATS = ("text", "json")


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


def setting(
    default: Any,
    env: str,
    meaning: str,
    *,
    low: int | None = None,
    high: int | None = None,
    shown: str | None = None,
) -> Any:
    """Declare one setting, once: its variable, default, bounds and one-line meaning (the README's table)."""
    return field(default=default, metadata={"env": env, "meaning": meaning, "low": low, "high": high, "shown": shown})


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the embedded defaults of a first run.

    Each field names its environment variable in its metadata; ``from_env`` reads them all by that table,
    and ``configuration_table`` renders the same table for the README.
    """

    database: DatabaseURL = field(
        default=DatabaseURL.parse(DEFAULT_DATABASE_URL),
        metadata={
            "env": "TAXI_DATABASE_URL",
            "shown": f"`{DEFAULT_DATABASE_URL}`",
            "meaning": "`postgresql://user[:password]@host:port/db` (aiopg pool per worker) or `sqlite:///path`",
        },
    )
    secret_key: str = setting(
        "",
        "TAXI_SECRET_KEY",
        f"JWT signing key, at least {MIN_SECRET_BYTES} bytes. Unset with SQLite: generated once into "
        "`.taxi-secret` beside the database file. With PostgreSQL it is required",
        shown="generated",
    )
    redis_url: str | None = setting(
        None,
        "TAXI_REDIS_URL",
        "e.g. `redis://127.0.0.1:6379/0`. Unset: in-process broker, one worker only; "
        "`--workers 2` without it refuses to start",
    )
    redis_prefix: str = setting(
        "taxi:",
        "TAXI_REDIS_PREFIX",
        "prefix of every Redis key and channel, so several deployments can share one Redis",
    )
    media_root: Path = setting(
        DEFAULT_MEDIA_ROOT, "TAXI_MEDIA_ROOT", "where uploaded photos are stored (`<root>/photos/`)"
    )
    public_url: str | None = setting(
        None,
        "TAXI_PUBLIC_URL",
        "where clients reach the API, path prefix included (e.g. `https://api.example.com`). When set, photo URLs "
        "and the trip list's `Link` are absolute under it; unset, they are relative (`/media/...`, `/api/trip/?...`)",
    )
    media_storage: str = setting(
        "local",
        "TAXI_MEDIA_STORAGE",
        "`local`: photos in `TAXI_MEDIA_ROOT` (one machine); `s3`: in an S3-compatible bucket that every machine "
        "shares (`TAXI_S3_*`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`)",
    )
    s3_endpoint: str | None = setting(
        None,
        "TAXI_S3_ENDPOINT",
        "the object store's URL (e.g. `http://minio.internal:9000`); unset: AWS S3 in `TAXI_S3_REGION`",
    )
    s3_bucket: str | None = setting(
        None, "TAXI_S3_BUCKET", "the bucket of photos, required with `s3` (objects `photos/<name>`)"
    )
    s3_region: str = setting("us-east-1", "TAXI_S3_REGION", "the bucket's region")
    aws_access_key_id: str | None = setting(None, "AWS_ACCESS_KEY_ID", "the object store's access key")
    aws_secret_access_key: str | None = setting(None, "AWS_SECRET_ACCESS_KEY", "the object store's secret key")
    media_public_url: str | None = setting(
        None,
        "TAXI_MEDIA_PUBLIC_URL",
        "when set (a CDN or a public bucket, e.g. `https://cdn.example.com`), photo URLs are "
        "`<this>/photos/<name>`; unset with `s3`: `/media/photos/<name>` redirects to a presigned URL of the bucket",
    )
    s3_url_lifetime: int = setting(
        300,
        "TAXI_S3_URL_LIFETIME",
        "seconds a presigned photo URL stays valid (the redirect itself is cached for half of it)",
        low=10,
        high=604800,
    )
    access_token_lifetime: int = setting(300, "TAXI_ACCESS_TOKEN_LIFETIME", "access token lifetime, seconds", low=1)
    refresh_token_lifetime: int = setting(
        86400, "TAXI_REFRESH_TOKEN_LIFETIME", "refresh token lifetime, seconds", low=1
    )
    rotate_refresh_tokens: bool = setting(
        True,
        "TAXI_ROTATE_REFRESH_TOKENS",
        "`1`: a refresh returns a new refresh token and retires the old one; a retired one presented again "
        "revokes every refresh token of its user. `0`: a refresh returns an access token only",
        shown="`1`",
    )
    cors_origins: tuple[str, ...] = setting(
        (),
        "TAXI_CORS_ORIGINS",
        "comma-separated browser origins allowed to call the API (preflight included); unset: no CORS headers",
    )
    bcrypt_rounds: int = setting(
        12,
        "TAXI_BCRYPT_ROUNDS",
        "bcrypt cost. 12 is ~250 ms of CPU per sign-up or log-in, run off the event loop",
        low=4,
        high=31,
    )
    db_pool_size: int = setting(
        20, "TAXI_DB_POOL_SIZE", "PostgreSQL connections per worker. Keep workers × size under `max_connections`", low=1
    )
    max_photo_bytes: int = setting(
        5 * 1024 * 1024,
        "TAXI_MAX_PHOTO_BYTES",
        "largest photo upload, bytes; the request body limit is this plus 256 KiB for the other form fields",
        low=1024,
    )
    max_photo_pixels: int = setting(
        16_000_000,
        "TAXI_MAX_PHOTO_PIXELS",
        "largest photo in pixels (width × height), refused from its header before any decoding",
        low=1,
    )
    photo_processes: int = setting(
        0,
        "TAXI_PHOTO_PROCESSES",
        "child processes per worker that decode and encode photos, at a lower CPU priority than the event loops; "
        "0: one per core",
        low=0,
    )
    trip_list_default: int = setting(
        100, "TAXI_TRIP_LIST_DEFAULT", "`limit` of `GET /api/trip/` when none is given (at most the maximum)", low=1
    )
    trip_list_max: int = setting(500, "TAXI_TRIP_LIST_MAX", "largest `limit` of `GET /api/trip/`", low=1)
    max_open_trips_per_rider: int = setting(
        1,
        "TAXI_MAX_OPEN_TRIPS_PER_RIDER",
        "trips a rider may hold REQUESTED, STARTED or IN_PROGRESS at once; one more `create.trip` gets `trip_open`",
        low=1,
    )
    ws_queue_size: int = setting(
        256,
        "TAXI_WS_QUEUE_SIZE",
        "frames a socket may fall behind before it is closed with 1013 (a client that stopped reading)",
        low=1,
    )
    ws_max_frame: int = setting(
        64 * 1024,
        "TAXI_WS_MAX_FRAME",
        "largest WebSocket message a client may send, bytes; a larger one closes the socket with 1009",
        low=1024,
    )
    ws_ping_interval: int = setting(
        20,
        "TAXI_WS_PING_INTERVAL",
        "seconds between keepalive pings of a WebSocket; one unanswered until the next closes it with 1011",
        low=1,
    )
    ws_messages_per_s: int = setting(
        20,
        "TAXI_WS_MESSAGES_PER_S",
        "messages a socket may send per second, in bursts of up to twice that (`update.location` excepted); "
        "more get `rate_limited`. Over ten times this many every second for 10 s closes the socket with 1008",
        low=1,
    )
    dispatch_radius_m: int = setting(
        5000,
        "TAXI_DISPATCH_RADIUS_M",
        "a request with a pick-up point reaches the available drivers within this many metres of it "
        "(great-circle); also the reach of `GET /api/drivers/nearby/`",
        low=100,
        high=100_000,
    )
    location_stale_s: int = setting(
        30,
        "TAXI_LOCATION_STALE_S",
        "a driver's position older than this many seconds does not count (the driver is not near anywhere)",
        low=1,
    )
    location_min_interval_ms: int = setting(
        1000,
        "TAXI_LOCATION_MIN_INTERVAL_MS",
        "at most one location fix per driver is applied per this many milliseconds; the newest of a burst is "
        "applied when it has passed, the ones between are dropped",
        low=0,
    )
    login_attempts_per_user: int = setting(
        10,
        "TAXI_LOGIN_ATTEMPTS_PER_USER",
        "log-in attempts per username per window; more get 429 with `Retry-After` (shared through Redis when "
        "configured)",
        low=1,
    )
    login_attempts_per_address: int = setting(
        50, "TAXI_LOGIN_ATTEMPTS_PER_ADDRESS", "log-in attempts per client address per window", low=1
    )
    login_window: int = setting(60, "TAXI_LOGIN_WINDOW", "the window of the log-in and sign-up limits, seconds", low=1)
    signups_per_address: int = setting(
        20, "TAXI_SIGNUPS_PER_ADDRESS", "sign-ups per client address per window (each costs a bcrypt hash)", low=1
    )
    proxies_count: int = setting(
        0,
        "TAXI_PROXIES_COUNT",
        "proxies in front of the server whose `X-Forwarded-For` is trusted for the client address "
        "(set 1 behind one load balancer)",
        low=0,
    )
    header_timeout: int = setting(
        10,
        "TAXI_HEADER_TIMEOUT",
        "seconds a client has to send a request's header (from the connection's start, or from the first byte of a "
        "later request); then 408",
        low=1,
    )
    body_min_rate: int = setting(
        500,
        "TAXI_BODY_MIN_RATE",
        "slowest request body accepted, bytes/s: t seconds into a body, (t − `TAXI_BODY_GRACE`) × this many bytes "
        "must have arrived; else 408",
        low=1,
    )
    body_grace: int = setting(
        20,
        "TAXI_BODY_GRACE",
        "seconds of slack a request body gets before `TAXI_BODY_MIN_RATE` counts (a stalled body gets 408 after it)",
        low=1,
    )

    backlog: int = setting(
        1024,
        "TAXI_BACKLOG",
        "listen backlog of `taxi serve`: connections the kernel queues before the server accepts them (a burst "
        "beyond it waits for SYN retransmits, about 1 s each; the kernel caps it at `net.core.somaxconn`)",
        low=1,
    )
    metrics: bool = setting(
        False,
        "TAXI_METRICS",
        "`1`: serve `GET /metrics` (Prometheus text format, summed over every worker of this server)",
        shown="`0`",
    )
    metrics_token: str | None = setting(
        None,
        "TAXI_METRICS_TOKEN",
        "when set, `GET /metrics` requires `Authorization: Bearer <this token>` (401 without it)",
    )

    log_format: str = setting(
        "text",
        "TAXI_LOG_FORMAT",
        "`text`, or `json`: one JSON object per line (`time`, `level`, `logger`, `message`, `worker`, `request_id`)",
    )
    access_log: bool = setting(
        False,
        "TAXI_ACCESS_LOG",
        "`1`: one log line per request (method, path without its query string, status, duration, request id)",
        shown="`0`",
    )

    shutdown_timeout: int = setting(
        3,
        "TAXI_SHUTDOWN_TIMEOUT",
        "seconds a stopping worker lets requests in flight finish; a worker still running 1 s after that is killed",
        low=1,
        high=60,
    )

    @property
    def photo_url_base(self) -> str:
        """Where photo URLs start (``<this>/photos/<name>``): the media public URL, else this server's ``/media``."""
        if self.media_public_url:
            return self.media_public_url
        return f"{self.public_url or ''}/media"

    @property
    def max_request_bytes(self) -> int:
        # A sign-up is a photo plus a few short fields; leave room for the multipart framing.
        return self.max_photo_bytes + 256 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, signing: bool = True) -> Settings:
        """Build settings from ``TAXI_*`` variables (``os.environ`` by default); raise ConfigError if invalid.

        ``signing=False`` (tools that issue no token: migrate, the admin commands) leaves the secret unresolved.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = env.get(item.metadata["env"])
            if raw is not None and raw != "":
                values[item.name] = _parse(item, raw)
        database = values.get("database", cls.database)
        if signing:
            values["secret_key"] = resolve_secret(values.get("secret_key", ""), database)
        settings = cls(**values)
        _check_media(settings)
        if settings.log_format not in LOG_FORMATS:
            raise ConfigError(f"TAXI_LOG_FORMAT: expected one of {', '.join(LOG_FORMATS)}, got {settings.log_format!r}")
        if settings.trip_list_default > settings.trip_list_max:
            settings = replace(settings, trip_list_default=settings.trip_list_max)
        return settings


MEDIA_STORAGES = ("local", "s3")


def _check_media(settings: Settings) -> None:
    """The storage is one we know, and an S3 store has a bucket."""
    if settings.media_storage not in MEDIA_STORAGES:
        raise ConfigError(f"TAXI_MEDIA_STORAGE: expected local or s3, got {settings.media_storage!r}")
    if settings.media_storage == "s3" and not settings.s3_bucket:
        raise ConfigError("TAXI_S3_BUCKET: required with TAXI_MEDIA_STORAGE=s3")


def _parse(item: Field[Any], raw: str) -> Any:
    """One variable's text as its field's type, within its bounds; ConfigError names the variable."""
    name, kind = item.metadata["env"], item.type
    if kind == "DatabaseURL":
        return DatabaseURL.parse(raw)
    if kind == "int":
        return _int(name, raw, item.metadata["low"], item.metadata["high"])
    if kind == "bool":
        return _bool(name, raw)
    if kind == "Path":
        return Path(raw)
    if kind == "tuple[str, ...]":
        return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    if item.name in ("public_url", "media_public_url", "s3_endpoint"):
        return raw.rstrip("/") or None
    if item.name == "media_storage":
        return raw.strip().lower()
    return raw


def _int(name: str, raw: str, low: int | None, high: int | None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name}: expected an integer {bound}, got {value}")
    return value


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def configuration_table() -> str:
    """The README's table of settings, rendered from the definitions above (a test keeps the two equal)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for item in fields(Settings):
        meta = item.metadata
        default = meta["shown"] or _shown(item.default)
        lines.append(f"| `{meta['env']}` | {default} | {meta['meaning']} |")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if value is None or value == ():
        return "unset"
    return f"`{value}`"


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
