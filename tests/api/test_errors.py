"""The HTTP surface around the endpoints: JSON errors for everything, CORS, OpenAPI, health."""

from __future__ import annotations

import secrets

import pytest

from taxi.app import create_app
from tests.conftest import make_settings


def test_unknown_path_and_wrong_method_are_json(client):
    _, missing = client.get("/api/nowhere/")
    assert missing.status == 404 and set(missing.json) == {"detail"}
    _, wrong = client.put("/api/log_in/", json={})
    assert wrong.status == 405 and set(wrong.json) == {"detail"}
    assert "POST" in wrong.headers["allow"]


@pytest.mark.parametrize(
    "body,ctype",
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"text"', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"null", "application/json"),
    ],
)
def test_malformed_or_non_object_json_is_400(client, body, ctype):
    for path in ("/api/sign_up/", "/api/log_in/", "/api/token/refresh/"):
        _, resp = client.post(path, content=body, headers={"content-type": ctype})
        assert resp.status == 400, (path, body)
        assert list(resp.json) == ["non_field_errors"]


def test_wrong_types_in_fields_are_400_not_500(client):
    for body in ({"username": ["x"], "password": {"a": 1}}, {"username": None, "password": 12}):
        _, resp = client.post("/api/log_in/", json=body)
        assert resp.status == 400 and set(resp.json) <= {"username", "password"}


def test_health_is_constant_json(client):
    _, resp = client.get("/api/health/")
    assert resp.status == 200 and resp.json == {"status": "ok"}


def test_openapi_describes_every_endpoint(client):
    _, resp = client.get("/docs/openapi.json")
    assert resp.status == 200
    paths = resp.json["paths"]
    assert set(paths) == {
        "/api/sign_up/",
        "/api/log_in/",
        "/api/token/refresh/",
        "/api/log_out/",
        "/api/trip/",
        "/api/trip/{trip_id}/",
        "/media/photos/{name}",
        "/api/health/",
    }
    # The error shapes are part of the description.
    assert set(paths["/api/log_in/"]["post"]["responses"]) == {"200", "400", "401", "429", "503"}
    assert "token" in resp.json["components"]["securitySchemes"]
    _, page = client.get("/docs")
    assert page.status == 200 and "html" in page.headers["content-type"]


def test_cors_allows_configured_origins_only(database_url, tmp_path):
    from sanic_testing.reusable import ReusableClient

    from taxiload.harness import free_port

    settings = make_settings(database_url, tmp_path, cors_origins=("http://localhost:3000",))
    app = create_app(settings, name=f"taxi_{secrets.token_hex(4)}")
    with ReusableClient(app, port=free_port()) as client:
        preflight_headers = {
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        }
        _, pre = client.options("/api/trip/", headers=preflight_headers)
        assert pre.status == 204
        assert pre.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        _, get = client.get("/api/health/", headers={"Origin": "http://localhost:3000"})
        assert get.headers["access-control-allow-origin"] == "http://localhost:3000"
        _, evil = client.get("/api/health/", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in evil.headers


@pytest.mark.parametrize(
    "method,path,allowed",
    [
        ("TRACE", "/api/trip/0/", {"GET"}),
        ("TRACE", "/media/photos/0", {"GET"}),
        ("DELETE", "/api/trip/", {"GET"}),
        ("PATCH", "/api/log_out/", {"POST"}),
        ("PUT", "/media/photos/" + "a" * 32 + ".png", {"GET"}),
        ("TRACE", "/api/health/", {"GET"}),
    ],
)
def test_every_405_says_which_methods_are_allowed(client, method, path, allowed):
    _, resp = client.request(path, http_method=method.lower())
    assert resp.status == 405, resp.text
    assert resp.json == {"detail": f'Method "{method}" not allowed.'}
    named = {m.strip() for m in resp.headers["allow"].split(",")}
    assert allowed <= named and method not in named


def test_no_response_may_be_sniffed_as_another_type(client):
    _, health = client.get("/api/health/")
    _, missing = client.get("/api/nowhere/")
    _, wrong = client.request("/api/trip/0/", http_method="trace")
    _, invalid = client.post("/api/log_in/", json={})
    _, unauthenticated = client.get("/api/trip/")
    _, spec = client.get("/docs/openapi.json")
    for resp in (health, missing, wrong, invalid, unauthenticated, spec):
        assert resp.headers.get_list("x-content-type-options") == ["nosniff"], (resp.status, resp.text)


def test_wherever_cors_can_answer_responses_vary_by_origin(database_url, tmp_path):
    from sanic_testing.reusable import ReusableClient

    from taxiload.harness import free_port

    settings = make_settings(database_url, tmp_path, cors_origins=("http://localhost:3000",))
    app = create_app(settings, name=f"taxi_{secrets.token_hex(4)}")
    with ReusableClient(app, port=free_port()) as client:
        # Without an Origin, or from another origin, the answer carries no CORS header; a shared cache must not
        # hand that answer to the allowed origin (or the allowed answer to anyone else).
        for headers in ({}, {"Origin": "http://evil.example"}, {"Origin": "http://localhost:3000"}):
            for path in ("/api/health/", "/api/nowhere/", "/api/trip/"):
                _, resp = client.get(path, headers=headers)
                vary = {v.strip().lower() for v in ",".join(resp.headers.get_list("vary")).split(",")}
                assert "origin" in vary, (path, headers, resp.headers)
                assert resp.headers["x-content-type-options"] == "nosniff"
