"""The application's typed context: what ``create_app`` builds once and each worker completes at start-up.

``TaxiApp`` and ``TaxiRequest`` give every ``app.ctx.x`` and ``request.app.ctx.x`` its type.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import redis.asyncio as aioredis
from sanic import Request, Sanic
from sanic.config import Config

from taxi.api.keepalive import Keepalive
from taxi.config import Settings
from taxi.loopwatch import LoopWatch
from taxi.realtime import Relay, Session
from taxi.realtime.meter import NO_METER, Meter
from taxi.realtime.pace import MessageLimit
from taxi.security import TokenIssuer
from taxi.services.accounts import Accounts
from taxi.services.locations import Locations
from taxi.services.media import Media
from taxi.services.presence import Presence
from taxi.services.profiles import Profiles
from taxi.services.trip_events import TripEvents
from taxi.services.trips import Trips


@dataclass
class AppContext:
    """Services built by ``create_app``; the per-worker ones (pool, relay, Redis client) are set by the
    ``before_server_start`` listener and exist only while the worker serves."""

    settings: Settings
    tokens: TokenIssuer
    accounts: Accounts
    trips: Trips
    media: Media
    profiles: Profiles
    database: Any = field(init=False)  # the worker's peewee-async database (pool)
    relay: Relay = field(init=False)
    keepalive: Keepalive = field(init=False)  # the worker's WebSocket pings
    events: TripEvents[Session] = field(init=False)
    presence: Presence = field(init=False)
    locations: Locations = field(init=False)
    redis: aioredis.Redis | None = field(init=False, default=None)
    meter: Meter = field(init=False, default=NO_METER)  # the worker's metrics (Prometheus), or none
    metrics_dir: Path | None = None  # where every worker's metric values are kept (TAXI_METRICS=1)
    sampler: asyncio.Task[None] | None = field(init=False, default=None)  # the pool gauges' updater
    loop_watch: LoopWatch | None = field(init=False, default=None)  # this worker's event loop lag
    message_limit: MessageLimit = field(init=False)  # every socket's rate (TAXI_WS_MESSAGES_PER_S)

    def __post_init__(self) -> None:
        self.message_limit = MessageLimit(self.settings.ws_messages_per_s)


TaxiApp = Sanic[Config, AppContext]
TaxiRequest = Request[TaxiApp, SimpleNamespace]
