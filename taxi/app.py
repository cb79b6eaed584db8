"""The composition root: ``create_app(settings)`` wires settings, database, services, realtime and blueprints.

Run it with ``sanic taxi.app:create_app --factory --workers N``. Every worker process calls the
factory; the ``before_server_start`` listener then opens that worker's database pool.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sanic import Sanic
from sanic_ext import openapi

from taxi import __version__, logs, supervise
from taxi import db as dbm
from taxi import metrics as metricsm
from taxi.api import auth, connection, docs, drivers, health, me, media, observe, socket, trips
from taxi.api.context import AppContext, TaxiApp
from taxi.api.conversation import CLIENT_TYPES
from taxi.api.errors import JSONErrorHandler
from taxi.api.headers import add_response_headers
from taxi.api.keepalive import Keepalive
from taxi.api.spec import build_spec
from taxi.api.ws_transport import allow_no_subprotocol
from taxi.config import ConfigError, Settings
from taxi.db.usage import pool_usage
from taxi.loopwatch import LoopWatch, tune_collector
from taxi.migrations import LATEST, current_version, migrate
from taxi.protocol import RESUME_REQUIRED, frame
from taxi.realtime import Hub, LocalBroker, RedisBroker, Relay, Session
from taxi.realtime.broker import redis_retry
from taxi.security import TokenIssuer
from taxi.services.accounts import Accounts, LoginLimits
from taxi.services.locations import Locations
from taxi.services.media import LocalStore, Media, PhotoStore
from taxi.services.presence import Presence
from taxi.services.presence_store import LocalPresenceStore, PresenceStore, RedisPresenceStore
from taxi.services.profiles import Profiles
from taxi.services.s3_store import S3Store
from taxi.services.throttle import RedisThrottle
from taxi.services.trip_events import TripEvents, trip_of
from taxi.services.trips import Trips

log = logging.getLogger("taxi")

__all__ = ["TaxiApp", "create_app"]


def create_app(settings: Settings | object | None = None, name: str = "taxi") -> TaxiApp:
    """Build the application; with no settings, read them from the ``TAXI_*`` environment.

    The Sanic CLI calls factories with its parsed arguments; anything but Settings means "from the environment".
    """
    with logs.held() as early:
        if not isinstance(settings, Settings):
            settings = Settings.from_env()
    app: TaxiApp = Sanic(name, error_handler=JSONErrorHandler(), ctx=_context(settings))
    _configure_logging(settings.log_format)  # after Sanic(): building an app resets Sanic's own loggers
    logs.replay(early)
    _configure(app, settings)

    allow_no_subprotocol()  # the socket offers the taxi.v2 subprotocol; the reference client offers none
    for module in (auth, me, trips, drivers, media, health, socket, docs):
        app.blueprint(module.bp)
        openapi.exclude(bp=module.bp)  # described once, exactly, in taxi.api.spec
    app.ext.openapi.raw(build_spec(settings))
    add_response_headers(app, cors=bool(settings.cors_origins))

    observe.install(app, _measure(app) if settings.metrics else None, settings.access_log)
    supervise.protect_sync_manager()  # in the main process
    supervise.protect_worker_stop()  # in each worker
    app.register_listener(_supervise, "main_process_ready")
    app.register_listener(_check_deployment, "main_process_start")
    app.register_listener(connection.install, "main_process_start")  # slow-client limits, bad request lines
    app.register_listener(_open_worker, "before_server_start")
    app.register_listener(_close_sockets, "before_server_stop")
    app.register_listener(_close_worker, "after_server_stop")
    return app


def _context(settings: Settings) -> AppContext:
    tokens = TokenIssuer(settings.secret_key, settings.access_token_lifetime, settings.refresh_token_lifetime)
    limits = LoginLimits(
        settings.login_attempts_per_user,
        settings.login_attempts_per_address,
        settings.login_window,
        settings.signups_per_address,
    )
    media = Media(photo_store(settings), settings.max_photo_bytes, settings.max_photo_pixels, settings.photo_processes)
    return AppContext(
        settings=settings,
        tokens=tokens,
        accounts=Accounts(
            tokens,
            settings.bcrypt_rounds,
            settings.photo_url_base,
            limits,
            rotate_refresh=settings.rotate_refresh_tokens,
        ),
        trips=Trips(settings.photo_url_base, settings.max_open_trips_per_rider),
        media=media,
        profiles=Profiles(media, settings.photo_url_base),
    )


def photo_store(settings: Settings) -> PhotoStore:
    """The configured photo store: the media folder, or the S3 bucket every machine shares."""
    if settings.media_storage == "s3":
        return S3Store(
            settings.s3_bucket or "",
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            access_key=settings.aws_access_key_id,
            secret_key=settings.aws_secret_access_key,
            url_lifetime=settings.s3_url_lifetime,
        )
    return LocalStore(settings.media_root)


class _QuietClientErrors(logging.Filter):
    """Sanic logs a traceback for a malformed form body; that is the client's error (answered 400), not ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed when parsing form"):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _configure_logging(log_format: str) -> None:
    """One masked formatter (text or JSON) for every logger of this process (``taxi.logs``)."""
    # The websockets library logs every close at INFO: one line per socket, thousands an hour. Warnings stay.
    logging.getLogger("websockets.server").setLevel(logging.WARNING)
    sanic_errors = logging.getLogger("sanic.error")
    if not any(isinstance(f, _QuietClientErrors) for f in sanic_errors.filters):
        sanic_errors.addFilter(_QuietClientErrors())
    logs.configure(log_format)


def _configure(app: TaxiApp, settings: Settings) -> None:
    config = app.config
    config.FALLBACK_ERROR_FORMAT = "json"
    config.REQUEST_MAX_SIZE = settings.max_request_bytes
    config.WEBSOCKET_MAX_SIZE = settings.ws_max_frame
    config.WEBSOCKET_PING_INTERVAL = None  # type: ignore[assignment]  # one Keepalive per worker pings instead
    config.NOISY_EXCEPTIONS = False
    config.ACCESS_LOG = False
    config.GRACEFUL_SHUTDOWN_TIMEOUT = settings.shutdown_timeout  # then open connections are dropped
    config.PROXIES_COUNT = settings.proxies_count  # behind a load balancer: trust its X-Forwarded-For
    if settings.cors_origins:
        config.CORS_ORIGINS = list(settings.cors_origins)
        config.CORS_ALLOW_HEADERS = ["authorization", "content-type"]
        config.CORS_EXPOSE_HEADERS = ["link"]  # a browser client reads the trip list's next page from it
        config.CORS_ALWAYS_SEND = False
        config.CORS_MAX_AGE = 600
    else:
        config.CORS = False
    config.OAS_UI_DEFAULT = "swagger"
    config.OAS_URL_PREFIX = "/docs"
    # Swagger UI from the installed package, not a CDN: /docs works offline (taxi.api.docs). Redoc has no
    # offline copy here, so it is not offered.
    config.OAS_UI_SWAGGER_CDN_URL = docs.ASSETS_URL
    config.OAS_UI_SWAGGER_VERSION = docs.ASSETS_VERSION
    config.OAS_UI_REDOC = False
    app.ext.openapi.describe(
        "taxi",
        version=__version__,
        description="Ride-sharing API: accounts, trips and photos over REST; trip events over the /taxi/ WebSocket.",
    )
    app.ext.openapi.add_security_scheme("token", "http", scheme="bearer", bearer_format="JWT")


async def _supervise(app: TaxiApp) -> None:
    """In the main process, once the worker manager exists: replace dead workers, and bound every stop."""
    supervise.install(app, grace=app.ctx.settings.shutdown_timeout + 1)


async def _check_deployment(app: TaxiApp) -> None:
    """Once, in the main process: refuse a shape that cannot work, and bring the embedded database up to date."""
    settings = app.ctx.settings
    workers = app.state.workers
    if workers > 1 and not settings.redis_url:
        raise ConfigError(
            f"--workers {workers} needs TAXI_REDIS_URL: the in-process broker only reaches sockets of one worker"
        )
    database = dbm.make_database(settings.database, 1)
    await database.aio_connect()
    try:
        if settings.database.is_sqlite:
            for version in await migrate(database):
                log.info("embedded database %s migrated to version %d", settings.database.name, version)
        elif (version := await current_version(database)) < LATEST:
            raise ConfigError(
                f"database {settings.database.redacted()} is at schema version {version}, this server needs "
                f"{LATEST}: run `python -m taxi migrate` first"
            )
    finally:
        await database.aio_close()


async def _open_worker(app: TaxiApp) -> None:
    """In every worker: its database pool, its hub, and its broker connection."""
    settings = app.ctx.settings
    app.ctx.database = await dbm.connect(settings.database, settings.db_pool_size)
    await app.ctx.media.start()
    redis_url = settings.redis_url
    resync = frame(RESUME_REQUIRED, {})
    if redis_url:
        meter = app.ctx.meter
        relay = Relay(
            Hub(), lambda deliver: RedisBroker(redis_url, settings.redis_prefix, deliver, meter=meter), meter, resync
        )
    else:
        relay = Relay(Hub(), LocalBroker, app.ctx.meter, resync)
    await relay.broker.start()
    app.ctx.relay = relay
    app.ctx.keepalive = Keepalive(settings.ws_ping_interval)
    app.ctx.keepalive.start()
    app.ctx.events = TripEvents(relay)
    store: PresenceStore = LocalPresenceStore()
    if settings.redis_url:
        app.ctx.redis = aioredis.from_url(
            settings.redis_url,
            socket_connect_timeout=1,
            socket_timeout=1,
            health_check_interval=15,
            retry=redis_retry(),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        app.ctx.accounts.throttle = RedisThrottle(app.ctx.redis, settings.redis_prefix)
        store = RedisPresenceStore(_presence_client(settings.redis_url), settings.redis_prefix)
    app.ctx.presence = Presence(store, settings.dispatch_radius_m, settings.location_stale_s)
    app.ctx.trips.presence = app.ctx.presence
    app.ctx.locations = Locations(app.ctx.presence, app.ctx.events, settings.location_min_interval_ms / 1000)
    locations = app.ctx.locations

    def left(session: Session, group: str) -> None:
        """A driver taken out of a trip's group (it ended, or was handed back) sends that trip no more positions."""
        trip_id = trip_of(group)
        if trip_id is not None and session.user is not None:
            locations.trip_ended(session.user, trip_id)

    relay.on_leave = left
    if isinstance(app.ctx.meter, metricsm.PrometheusMeter):
        app.ctx.sampler = asyncio.create_task(_sample_pool(app.ctx.meter, app.ctx.database), name="pool-gauges")
        app.ctx.loop_watch = LoopWatch(app.ctx.meter.loop_lag)
    else:
        app.ctx.loop_watch = LoopWatch(lambda _lag, _blocked: None)
    app.ctx.loop_watch.start()
    tune_collector()  # last: everything this worker built so far lives as long as it does


def _measure(app: TaxiApp) -> metricsm.PrometheusMeter:
    """TAXI_METRICS=1: this process's meter, ``GET /metrics``, and the directory every worker writes its values to
    (made by the main process, which names it in the environment its workers inherit, and removes it at the end)."""
    directory, created = metricsm.use_directory()
    app.ctx.metrics_dir = directory
    meter = metricsm.PrometheusMeter(CLIENT_TYPES)
    app.ctx.meter = meter
    app.blueprint(observe.bp)
    openapi.exclude(bp=observe.bp)  # for the operator's Prometheus, not for API clients

    async def clear(_app: TaxiApp) -> None:
        metricsm.clear_directory(directory)

    async def remove(_app: TaxiApp) -> None:
        metricsm.remove_directory(directory)

    app.register_listener(remove if created else clear, "main_process_stop" if created else "main_process_start")
    return meter


async def _sample_pool(meter: metricsm.PrometheusMeter, database: object) -> None:
    """Every second, this worker's pool usage into its gauges (a scrape reads every worker's last values)."""
    while True:
        meter.pool(*pool_usage(database))
        await asyncio.sleep(1)


def _presence_client(url: str) -> aioredis.Redis:
    """Redis for drivers' positions: thousands of fixes a second share a bounded pool, and a burst waits for a
    free connection (up to 2 s) instead of failing at the pool's limit."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=64,
        timeout=2,
        socket_connect_timeout=1,
        socket_timeout=1,
        health_check_interval=15,
        retry=redis_retry(),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis(connection_pool=pool)


async def _close_sockets(app: TaxiApp) -> None:
    """On SIGTERM, tell every socket the server is going away (1001) instead of waiting out the grace period."""
    relay = getattr(app.ctx, "relay", None)
    if relay is not None and (count := relay.close_all(1001, "server shutting down; reconnect")):
        log.info("closed %d sockets for shutdown", count)


async def _close_worker(app: TaxiApp) -> None:
    if app.ctx.sampler is not None:
        app.ctx.sampler.cancel()
    if app.ctx.loop_watch is not None:
        app.ctx.loop_watch.stop()
    keepalive = getattr(app.ctx, "keepalive", None)
    if keepalive is not None:
        keepalive.stop()
    locations = getattr(app.ctx, "locations", None)
    if locations is not None:
        await locations.close()
        await locations.presence.store.close()
    relay = getattr(app.ctx, "relay", None)
    if relay is not None:
        await relay.broker.stop()
    client = getattr(app.ctx, "redis", None)
    if client is not None:
        await client.aclose()
    await app.ctx.media.stop()
    database = getattr(app.ctx, "database", None)
    if database is not None:
        await database.aio_close()
