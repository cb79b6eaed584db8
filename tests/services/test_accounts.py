"""Whether a username exists must not show in how long log-in or sign-up takes: both do the bcrypt work
either way. Without that work an unknown user would be answered ~50x faster at cost 10, so the margin
below is wide on purpose."""

from __future__ import annotations

import dataclasses
import secrets
import statistics
import time

from sanic_testing.reusable import ReusableClient

from taxi.app import create_app
from taxiload.harness import free_port
from tests.support import PASSWORD, sign_up


def timed(client, path: str, body: dict) -> tuple[int, float]:
    start = time.perf_counter()
    _, resp = client.post(path, json=body)
    return resp.status, time.perf_counter() - start


def test_unknown_users_cost_as_much_as_wrong_passwords(deployment):
    settings = dataclasses.replace(
        deployment, bcrypt_rounds=10, login_attempts_per_user=1000, login_attempts_per_address=1000
    )
    app = create_app(settings, name=f"taxi_{secrets.token_hex(4)}")
    with ReusableClient(app, port=free_port()) as client:
        sign_up(client, "known@example.com")
        timed(client, "/api/log_in/", {"username": "warm-up", "password": "x"})  # the dummy hash is made once
        known, unknown = [], []
        for i in range(5):
            status, seconds = timed(client, "/api/log_in/", {"username": "known@example.com", "password": "wrong!"})
            assert status == 401
            known.append(seconds)
            status, seconds = timed(client, "/api/log_in/", {"username": f"nobody{i}@example.com", "password": "x"})
            assert status == 401
            unknown.append(seconds)
        assert statistics.median(unknown) > 0.5 * statistics.median(known), (known, unknown)

        taken, fresh = [], []
        for i in range(3):
            body = {"password1": PASSWORD, "password2": PASSWORD, "group": "rider"}
            status, seconds = timed(client, "/api/sign_up/", {**body, "username": "known@example.com"})
            assert status == 400
            taken.append(seconds)
            status, seconds = timed(client, "/api/sign_up/", {**body, "username": f"new{i}@example.com"})
            assert status == 201
            fresh.append(seconds)
        assert statistics.median(taken) > 0.5 * statistics.median(fresh), (taken, fresh)
