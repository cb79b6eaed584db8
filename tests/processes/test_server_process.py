"""The production shape: ``sanic taxi.app:create_app --factory --workers 2`` on PostgreSQL + Redis."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from taxiload.harness import ServerProcess, call
from tests.servers import migrate_cli, server_env
from tests.support import PASSWORD


def test_two_workers_serve_the_api_and_stop_cleanly(pg_database_url, tmp_path):
    with ServerProcess(server_env(pg_database_url, tmp_path), workers=2) as server:
        status, user = call(
            f"{server.url}/api/sign_up/",
            {"username": "w@example.com", "password1": PASSWORD, "password2": PASSWORD, "group": "rider"},
        )
        assert status == 201, user
        status, tokens = call(f"{server.url}/api/log_in/", {"username": "w@example.com", "password": PASSWORD})
        assert status == 200
        # Many concurrent requests, spread by the kernel over both workers; all are served.
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: call(f"{server.url}/api/trip/", token=tokens["access"]), range(64)))
        assert results == [(200, [])] * 64
        assert server.stop() == 0
    log = server.output()
    assert log.count("Starting worker") >= 2, log
    assert "Traceback" not in log, log


def test_several_workers_without_redis_refuse_to_start(tmp_path):
    env = {"TAXI_DATABASE_URL": f"sqlite:///{tmp_path}/t.sqlite3", "TAXI_REDIS_URL": ""}
    server = ServerProcess(env, workers=2)
    with pytest.raises(RuntimeError) as err:
        server.start()
    assert "TAXI_REDIS_URL" in str(err.value)


def test_postgresql_without_a_strong_secret_refuses_to_start(pg_database_url, tmp_path):
    env = server_env(pg_database_url, tmp_path, TAXI_SECRET_KEY="short")
    with pytest.raises(RuntimeError) as err:
        ServerProcess(env).start()
    assert "TAXI_SECRET_KEY" in str(err.value)


def test_embedded_default_migrates_itself_and_keeps_one_secret(tmp_path):
    env = {
        "TAXI_DATABASE_URL": f"sqlite:///{tmp_path}/first.sqlite3",
        "TAXI_REDIS_URL": "",
        "TAXI_SECRET_KEY": "",
        "TAXI_BCRYPT_ROUNDS": "4",
        "TAXI_MEDIA_ROOT": str(tmp_path / "m"),
    }
    with ServerProcess(env) as server:
        status, _ = call(
            f"{server.url}/api/sign_up/",
            {"username": "first@example.com", "password1": PASSWORD, "password2": PASSWORD, "group": "driver"},
        )
        assert status == 201
        _, tokens = call(f"{server.url}/api/log_in/", {"username": "first@example.com", "password": PASSWORD})
    secret = (tmp_path / ".taxi-secret").read_text()
    assert len(secret) >= 32
    # A restart signs with the same key: the old token still works.
    with ServerProcess(env) as again:
        status, trips = call(f"{again.url}/api/trip/", token=tokens["access"])
        assert (status, trips) == (200, [])
    assert (tmp_path / ".taxi-secret").read_text() == secret
    with sqlite3.connect(tmp_path / "first.sqlite3") as conn:
        assert conn.execute("SELECT MAX(version) FROM taxi_schema_version").fetchone()[0] >= 1


def test_postgresql_server_refuses_an_unmigrated_database(postgresql_url, tmp_path):
    import psycopg2

    name = f"{postgresql_url.name}_empty"
    admin = psycopg2.connect(
        dbname="postgres", host=postgresql_url.host, port=postgresql_url.port, user=postgresql_url.user
    )
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        env = server_env(postgresql_url, tmp_path)
        env["TAXI_DATABASE_URL"] = env["TAXI_DATABASE_URL"].rsplit("/", 1)[0] + f"/{name}"
        with pytest.raises(RuntimeError) as err:
            ServerProcess(env).start()
        assert "python -m taxi migrate" in str(err.value)
        assert "applied 1" in migrate_cli(env)
        assert "nothing to do" in migrate_cli(env)
        with ServerProcess(env) as server:
            assert call(f"{server.url}/api/health/") == (200, {"status": "ok"})
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
