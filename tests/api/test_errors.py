"""The HTTP surface around the endpoints: JSON errors for everything, CORS, OpenAPI, health."""

from __future__ import annotations

import asyncio
import json
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
        "/api/me/",
        "/api/me/photo/",
        "/api/trip/",
        "/api/trip/{trip_id}/",
        "/api/trip/{trip_id}/cancel/",
        "/media/photos/{name}",
        "/api/drivers/nearby/",
        "/api/health/",
    }
    # The error shapes are part of the description.
    assert set(paths["/api/log_in/"]["post"]["responses"]) == {"200", "400", "401", "414", "415", "429", "503"}
    assert set(paths["/api/trip/"]["get"]["responses"]) == {"200", "400", "401", "414", "503"}
    assert "token" in resp.json["components"]["securitySchemes"]
    # What sign-up enforces on a username, and what a refresh returns, are published too.
    schemas = resp.json["components"]["schemas"]
    username = schemas["SignUp"]["properties"]["username"]
    assert (username["maxLength"], username["pattern"]) == (150, r"^[\p{L}\p{Nd}@.+\-_]+$")
    assert schemas["SignUpForm"]["properties"]["username"] == username
    assert set(schemas["AccessToken"]["properties"]) == {"access", "refresh"}
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


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", None])
def test_a_json_body_with_another_content_type_is_415_naming_the_accepted_types(client, ctype):
    body = b'{"username": "someone", "password": "whatever1"}'
    headers = {"content-type": ctype} if ctype else {}
    for path in ("/api/sign_up/", "/api/log_in/", "/api/token/refresh/"):
        # httpx adds no content type of its own to raw bytes, so None really sends none.
        _, resp = client.post(path, content=body, headers=headers)
        assert resp.status == 415, (path, ctype, resp.text)
        assert set(resp.json) == {"detail"}
        assert "application/json" in resp.json["detail"] and "multipart/form-data" in resp.json["detail"]


def test_json_with_a_charset_and_an_empty_body_without_a_type_are_still_accepted(client):
    _, charset = client.post(
        "/api/log_in/",
        content=b'{"username": "nobody", "password": "x"}',
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert charset.status == 401
    _, empty = client.post("/api/log_in/", content=b"")
    assert empty.status == 400 and set(empty.json) == {"username", "password"}


def raw_request(client, head: bytes) -> tuple[int, dict]:
    """Send one raw HTTP/1.1 request head to the test server and return the status and JSON body of the answer
    (on the client's loop: the test server only runs while it does)."""

    async def exchange() -> tuple[int, dict]:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        try:
            writer.write(head)
            await writer.drain()
            top = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status_line, *lines = top.strip().split("\r\n")
            length = next(int(v) for k, _, v in (h.partition(":") for h in lines) if k.lower() == "content-length")
            return int(status_line.split()[1]), json.loads(await reader.readexactly(length))
        finally:
            writer.close()

    return client._run(asyncio.wait_for(exchange(), 10))


def test_a_request_line_over_the_url_limit_is_414_and_oversized_headers_431(client):
    long_url = b"/api/trip/?limit=" + b"9" * 10_000
    status, body = raw_request(client, b"GET " + long_url + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414 and set(body) == {"detail"}
    status, body = raw_request(client, b"GET /api/nowhere/" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414 and set(body) == {"detail"}
    headers = b"".join(b"X-Padding-%d: %s\r\n" % (i, b"p" * 1000) for i in range(12))
    status, body = raw_request(client, b"GET /api/health/ HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status == 431 and set(body) == {"detail"}
