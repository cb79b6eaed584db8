"""taxi: a real-time ride-sharing API server (Sanic, peewee-async, Redis pub/sub)."""

__version__ = "0.1.0"
