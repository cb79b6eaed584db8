"""Realtime fan-out for one worker: sessions (one per socket), the hub (group -> local sessions), and the broker
that carries events between workers (Redis pub/sub, or in-process for a single worker).

Nothing here knows about Sanic, the database or the trip rules: it moves text frames to groups.
"""

from taxi.realtime.broker import Broker, BrokerUnavailable, LocalBroker, RedisBroker
from taxi.realtime.hub import Hub
from taxi.realtime.relay import Relay
from taxi.realtime.session import Session

__all__ = ["Broker", "BrokerUnavailable", "Hub", "LocalBroker", "RedisBroker", "Relay", "Session"]
