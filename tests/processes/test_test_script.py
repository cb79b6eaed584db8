"""``scripts/test`` on a machine where nothing answers on the standard ports: it starts private PostgreSQL and Redis
instances, runs the tests on them and removes them; without the binaries it says what to install.

The closed ports are given through the variables the script honours (the machine's own servers keep running)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from taxiload.harness import REPO, TIMEOUT_SCALE, free_port

# One test that needs PostgreSQL (through the database fixture) and one that needs Redis.
NESTED = [
    "tests/test_cli.py::test_users_are_created_listed_and_refused_as_the_sign_up_refuses_them",
    "tests/realtime/test_broker.py::test_publish_reaches_members_on_both_workers_but_not_the_origin",
]


def scripts_test(**env: str) -> subprocess.CompletedProcess[str]:
    closed = {"TAXI_TEST_PG_PORT": str(free_port()), "TAXI_TEST_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    return subprocess.run(
        ["bash", "scripts/test", "-q", "-p", "no:cacheprovider", *NESTED],
        cwd=REPO,
        env={**os.environ, **closed, **env},
        capture_output=True,
        text=True,
        timeout=300 * TIMEOUT_SCALE,
    )


def test_private_postgresql_and_redis_are_started_used_and_removed():
    done = scripts_test()
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    pg = re.search(r"started a private one on 127\.0\.0\.1:(\d+) in (\S+)\n", out)
    redis = re.search(r"started a private redis-server on 127\.0\.0\.1:(\d+) in (\S+)\n", out)
    assert pg and redis, out
    assert "3 passed" in out and "stopped and removed the private instances" in out, out
    for match in (pg, redis):
        assert not Path(match.group(2)).exists(), f"{match.group(2)} was left behind"
        port = int(match.group(1))
        assert subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout == ""


def test_missing_binaries_are_named_with_what_to_install():
    no_pg = scripts_test(TAXI_TEST_PG_BINDIR="/nonexistent")
    assert no_pg.returncode == 2 and "apt-get install postgresql" in no_pg.stderr, no_pg.stderr
    no_redis = scripts_test(TAXI_TEST_REDIS_SERVER="/nonexistent/redis-server")
    assert no_redis.returncode == 2 and "apt-get install redis-server" in no_redis.stderr, no_redis.stderr
    for done in (no_pg, no_redis):
        assert "Traceback" not in done.stdout + done.stderr
        assert "passed" not in done.stdout  # it stopped before pytest
