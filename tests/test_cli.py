"""The ``taxi`` command line, run for real (``python -m taxi`` in a subprocess) on both database backends."""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from taxi.config import DatabaseURL
from taxiload.harness import REPO, TIMEOUT_SCALE
from tests.support import PASSWORD, SyncDB, bearer, log_in, sign_up
from tests.wsclient import Live, connect


def cli_env(url, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Only what an operator would set: the database of the test, a fast bcrypt, and a path."""
    if url.is_sqlite:
        database = f"sqlite:///{url.name}"
    else:
        database = f"postgresql://{url.user}@{url.host}:{url.port}/{url.name}"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "TAXI_DATABASE_URL": database, "TAXI_BCRYPT_ROUNDS": "4"}
    return env | extra


def taxi(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taxi", *args],
        env=env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60 * TIMEOUT_SCALE,
    )


def ok(env: dict[str, str], *args: str) -> str:
    done = taxi(env, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_users_are_created_listed_and_refused_as_the_sign_up_refuses_them(database_url, tmp_path):
    env = cli_env(database_url, tmp_path, TAXI_USER_PASSWORD=PASSWORD)
    assert ok(env, "users", "create", "--username", "ana", "--group", "rider", "--first-name", "Ana") == (
        "created rider 'ana' (id 1)\n"
    )
    ok(env, "users", "create", "--username", "bob", "--group", "driver", "--last-name", "Builder")

    taken = taxi(env, "users", "create", "--username", "ANA", "--group", "driver")
    assert (taken.returncode, taken.stderr) == (2, "taxi: username: A user with that username already exists.\n")
    short = taxi({**env, "TAXI_USER_PASSWORD": "short"}, "users", "create", "--username", "cy", "--group", "rider")
    assert short.returncode == 2 and "password1: Ensure this field has at least 8 characters." in short.stderr
    no_password = taxi({k: v for k, v in env.items() if k != "TAXI_USER_PASSWORD"}, "users", "create",
                       "--username", "cy", "--group", "rider")  # fmt: skip
    assert no_password.returncode == 1 and "TAXI_USER_PASSWORD" in no_password.stderr
    assert "Traceback" not in taken.stderr + short.stderr + no_password.stderr

    table = ok(env, "users", "list").splitlines()
    assert table[0].split() == ["id", "username", "name", "group", "active", "joined"]
    assert table[2].split()[:5] == ["1", "ana", "Ana", "rider", "yes"]
    assert table[3].split()[:5] == ["2", "bob", "Builder", "driver", "yes"]
    assert len(table) == 4  # the refused ones were not created

    listed = json.loads(ok(env, "users", "list", "--json", "--group", "driver"))
    assert [(u["username"], u["last_name"], u["is_active"]) for u in listed] == [("bob", "Builder", True)]
    assert [u["username"] for u in json.loads(ok(env, "users", "list", "--json", "--search", "BUILD"))] == ["bob"]
    assert ok(env, "users", "list", "--search", "nobody") == "(none)\n"


def test_a_deactivated_user_cannot_log_in_refresh_or_connect_until_activated(database_url, client, tmp_path):
    env = cli_env(database_url, tmp_path)
    live = Live(client)
    sign_up(client, "gone@example.com")
    tokens = log_in(client, "gone@example.com")
    live.run(_connects(live, tokens["access"]))

    assert ok(env, "users", "deactivate", "gone@example.com") == "'gone@example.com' (id 1) is deactivated\n"
    assert ok(env, "users", "deactivate", "gone@example.com") == "'gone@example.com' was already deactivated\n"
    _, resp = client.post("/api/log_in/", json={"username": "gone@example.com", "password": PASSWORD})
    assert resp.status == 401
    assert client.post("/api/token/refresh/", json={"refresh": tokens["refresh"]})[1].status == 401
    assert client.get("/api/trip/", headers=bearer(tokens["access"]))[1].status == 401
    with pytest.raises(Exception, match="401"):
        live.run(connect(live.base, tokens["access"]))
    assert json.loads(ok(env, "users", "list", "--json"))[0]["is_active"] is False

    assert ok(env, "users", "activate", "GONE@example.com") == "'gone@example.com' (id 1) is active\n"
    again = log_in(client, "gone@example.com")
    live.run(_connects(live, again["access"]))
    # The refresh tokens of before the deactivation stay retired; the new ones work.
    assert client.post("/api/token/refresh/", json={"refresh": tokens["refresh"]})[1].status == 401
    assert client.post("/api/token/refresh/", json={"refresh": again["refresh"]})[1].status == 200

    missing = taxi(env, "users", "activate", "nobody")
    assert (missing.returncode, missing.stderr) == (1, "taxi: No user is called 'nobody'.\n")


async def _connects(live: Live, token: str) -> None:
    ws = await connect(live.base, token)
    await ws.close()


def test_trips_are_listed_filtered_and_shown(database_url, sql, tmp_path):
    env = cli_env(database_url, tmp_path, TAXI_USER_PASSWORD=PASSWORD)
    for name, group in (("ana", "rider"), ("bob", "driver"), ("cy", "rider")):
        ok(env, "users", "create", "--username", name, "--group", group)
    ana, bob, cy = (sql.user_id(name) for name in ("ana", "bob", "cy"))
    done = sql.add_trip(ana, bob, "COMPLETED", pick_up="Home", drop_off="Work", age_seconds=60)
    waiting = sql.add_trip(cy, None, "REQUESTED", pick_up="Station")

    table = ok(env, "trips", "list").splitlines()
    assert table[0].split() == ["id", "status", "created", "(UTC)", "rider", "driver", "pick-up"]
    assert [line.split()[:2] for line in table[2:]] == [[waiting, "REQUESTED"], [done, "COMPLETED"]]
    assert "ana (1)" in table[3] and "bob (2)" in table[3] and "Home" in table[3]

    assert [t["id"] for t in json.loads(ok(env, "trips", "list", "--json", "--user", "bob"))] == [done]
    assert [t["id"] for t in json.loads(ok(env, "trips", "list", "--json", "--status", "REQUESTED"))] == [waiting]
    assert ok(env, "trips", "list", "--user", "cy", "--status", "COMPLETED") == "(none)\n"
    shown = json.loads(ok(env, "trips", "show", done, "--json"))
    assert (shown["status"], shown["rider"]["username"], shown["driver"]["username"]) == ("COMPLETED", "ana", "bob")
    assert (shown["pick_up_address"], shown["drop_off_address"]) == ("Home", "Work")
    lines = dict(line.split(None, 1) for line in ok(env, "trips", "show", waiting).splitlines() if " " in line)
    assert lines["status"].strip() == "REQUESTED" and lines["rider"].strip() == "cy (3)"

    unknown = taxi(env, "trips", "show", "7b1c3c9e-0000-4000-8000-000000000000")
    assert (unknown.returncode, unknown.stderr) == (
        1,
        "taxi: No trip has the id 7b1c3c9e-0000-4000-8000-000000000000.\n",
    )
    malformed = taxi(env, "trips", "show", "12")
    assert (malformed.returncode, malformed.stderr) == (2, "taxi: id: Must be a valid UUID, got '12'.\n")
    bad_status = taxi(env, "trips", "list", "--status", "LOST")
    assert bad_status.returncode == 2 and "invalid choice: 'LOST'" in bad_status.stderr
    no_user = taxi(env, "trips", "list", "--user", "nobody")
    assert (no_user.returncode, no_user.stderr) == (1, "taxi: No user is called 'nobody'.\n")


def test_the_password_is_asked_twice_on_a_terminal(sqlite_url, tmp_path):
    env = cli_env(sqlite_url, tmp_path)
    sql = SyncDB(sqlite_url)
    sql.reset()
    args = ["users", "create", "--username", "tty", "--group", "driver"]
    status, said = _on_terminal(env, args, ["typed-pass-1\n", "typed-pass-2\n"])
    assert status == 1 and "the two passwords differ; nothing was created" in said, said
    status, said = _on_terminal(env, args, ["typed-pass-1\n", "typed-pass-1\n"])
    assert status == 0 and "created driver 'tty'" in said, said
    assert said.count("Password") == 2 and "typed-pass-1" not in said  # asked twice, never echoed
    assert sql.fetch("SELECT username FROM taxi_user") == [("tty",)]


def _on_terminal(env: dict[str, str], args: list[str], answers: list[str]) -> tuple[int, str]:
    """Run ``python -m taxi ARGS`` with a pseudo-terminal as its controlling terminal, typing each answer after
    each prompt; returns the exit status and everything it wrote to the terminal."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: become the command
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, "-m", "taxi", *args], env)
    said, pending = b"", list(answers)
    deadline = time.monotonic() + 60 * TIMEOUT_SCALE
    poller = select.poll()  # not select(): the suite may hold more than 1024 descriptors by now
    poller.register(fd, select.POLLIN)
    try:
        while time.monotonic() < deadline:
            if poller.poll(200):
                try:
                    chunk = os.read(fd, 1024)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                said += chunk
            if pending and said.count(b": ") > len(answers) - len(pending):
                os.write(fd, pending.pop(0).encode())
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), said.decode(errors="replace")


def test_the_embedded_database_is_brought_up_to_date_and_an_old_postgresql_one_refused(postgresql_url, tmp_path):
    fresh = DatabaseURL(backend="sqlite", name=str(tmp_path / "new.sqlite3"))
    env = cli_env(fresh, tmp_path, TAXI_USER_PASSWORD=PASSWORD)
    assert ok(env, "users", "create", "--username", "first", "--group", "rider") == "created rider 'first' (id 1)\n"

    empty = dataclasses.replace(postgresql_url, name=f"{postgresql_url.name}_cli_empty")
    admin = psycopg2.connect(dbname="postgres", host=empty.host, port=empty.port, user=empty.user)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{empty.name}"')
    try:
        refused = taxi(cli_env(empty, tmp_path), "users", "list")
        assert refused.returncode == 1 and "schema version 0" in refused.stderr, refused.stderr
        assert "run `taxi migrate` first" in refused.stderr and "Traceback" not in refused.stderr
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{empty.name}" WITH (FORCE)')
        admin.close()
