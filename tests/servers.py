"""What the tests add to taxiload.harness (scripts/taxiload/harness.py: the server process, private PostgreSQL and
Redis, free ports, the HTTP helper): a server environment on the test database and Redis, and the migrate command
run as an operator would."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from taxiload.harness import migrate


def server_env(url: Any, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """TAXI_* variables for a server process on the test PostgreSQL database ``url`` and the test Redis."""
    from tests.conftest import REDIS_URL, RUN_ID, SECRET

    env = {
        "TAXI_DATABASE_URL": f"postgresql://{url.user}@{url.host}:{url.port}/{url.name}",
        "TAXI_REDIS_URL": REDIS_URL,
        # Unique per server: log-in counters live in Redis for a window and must not leak into the next run.
        "TAXI_REDIS_PREFIX": f"taxi_test_{RUN_ID}_{secrets.token_hex(3)}:",
        "TAXI_SECRET_KEY": SECRET,
        "TAXI_BCRYPT_ROUNDS": "4",
        "TAXI_MEDIA_ROOT": str(tmp_path / "media"),
        "TAXI_SIGNUPS_PER_ADDRESS": "1000",  # the tests sign up many users from 127.0.0.1
        "TAXI_MAX_OPEN_TRIPS_PER_RIDER": "100",  # the tests give one rider several trips at once
    }
    env.update(overrides)
    return env


def migrate_cli(env: dict[str, str]) -> str:
    """Run ``python -m taxi migrate`` as an operator would, with only ``env``; return what it printed."""
    return migrate({**env, "PATH": "/usr/bin:/bin"})
