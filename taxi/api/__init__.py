"""HTTP and WebSocket handlers: parse, call a service, shape the reply. Only ``taxi.app`` imports this package."""
