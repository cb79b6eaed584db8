"""The AsyncAPI 3.0 document of the /taxi/ WebSocket: served at /docs/asyncapi.json, consistent, and covering
every message in both directions with real frames (every socket test's frames are checked too: tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import json

import jsonschema_rs
import pytest

from taxi.api.asyncapi import CLIENT_MESSAGES, SERVER_MESSAGES, build_asyncapi
from tests import frames, wsclient
from tests.api.test_dispatch import Map, at, located
from tests.wsclient import Live, ask, connect, recv, send


@pytest.fixture
def settings(deployment):
    return dataclasses.replace(deployment, location_min_interval_ms=300)


@pytest.fixture
def live(client):
    return Live(client)


def _resolve(doc: dict, ref: str) -> dict:
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_the_document_is_served_and_every_reference_resolves(client):
    _, resp = client.get("/docs/asyncapi.json")
    assert resp.status == 200 and resp.headers["content-type"] == "application/json"
    doc = resp.json
    assert doc == json.loads(json.dumps(build_asyncapi())) and doc["asyncapi"] == "3.0.0"
    channel = doc["channels"]["taxi"]
    assert channel["address"] == "/taxi/"
    assert {_resolve(doc, m["$ref"])["name"] for m in channel["messages"].values()} == {
        "echo.message", "create.trip", "update.trip", "update.location", "update.availability", "driver.location",
        "error", "authenticate", "authenticated",
    } | ({"cancel.trip", "resume", "resume.done", "resume.required"} if "cancelTrip" in CLIENT_MESSAGES else set())  # fmt: skip
    directions: dict[str, set[str]] = {"receive": set(), "send": set()}
    for operation in doc["operations"].values():
        assert _resolve(doc, operation["channel"]["$ref"]) == channel
        for ref in operation["messages"]:
            assert ref["$ref"].startswith("#/channels/taxi/messages/")
            directions[operation["action"]].add(ref["$ref"].rsplit("/", 1)[1])
    assert directions == {"receive": set(CLIENT_MESSAGES), "send": set(SERVER_MESSAGES)}
    for message in doc["components"]["messages"].values():
        jsonschema_rs.Draft7Validator({"components": doc["components"], **message["payload"]})


def test_real_frames_of_every_message_match_the_document_both_ways(live: Live):
    rider = live.account("rider@example.com", "rider")
    driver = live.account("driver@example.com", "driver")

    async def scenario():
        d = await connect(live.base, driver["access"], protocol=2)
        r = await connect(live.base, rider["access"], protocol=2)
        await send(d, "update.availability", {"available": True})
        await send(d, "update.location", at(300))
        await Map(live, rider["access"]).shows(1)
        trip = (await ask(r, "create.trip", located(rider=rider["id"])))["data"]
        await recv(d)
        await ask(d, "update.trip", {"id": trip["id"], "status": "STARTED", "driver": driver["id"]})
        await recv(r)
        await send(d, "update.location", {**at(250), "heading": 90, "speed": 3.5})
        assert (await recv(r))["type"] == "driver.location"
        assert (await ask(r, "update.trip", {"id": trip["id"], "status": "COMPLETED"}))["type"] == "error"
        assert (await ask(r, "echo.message", {"any": ["thing"]}))["data"] == {"any": ["thing"]}
        assert (await ask(r, "authenticate", {"token": rider["access"]}))["type"] == "authenticated"
        if "cancelTrip" in CLIENT_MESSAGES:  # issue 10's messages, once the protocol has them
            assert (await ask(r, "cancel.trip", {"id": trip["id"], "reason": "changed"}))["type"] == "echo.message"
            await send(r, "resume", {"trips": {trip["id"]: 1}})
            while (await recv(r))["type"] != "resume.done":
                pass
        for ws in (d, r):
            await ws.close()

    recordings = wsclient.RECORDINGS  # what this test's sockets exchange (turned on by tests/conftest.py)
    assert recordings is not None
    live.run(scenario())
    checked = frames.check(recordings)
    assert checked.problems == []
    expected = {("client", name) for name in CLIENT_MESSAGES} | {("server", name) for name in SERVER_MESSAGES}
    # resume.required needs a broker outage (the process tests exchange it through tests/wsclient.py).
    assert checked.seen == expected - {("server", "resumeRequired")}


# Frames the server refuses (each with the error code it answers) are refused by the document as well.
REFUSED = [
    '{"type": "create.trip", "data": "A to B"}',
    '{"type": "create.trip", "data": {"pick_up_address": "A"}}',
    '{"type": "create.trip", "data": {"pick_up_address": "", "drop_off_address": "B"}}',
    json.dumps({"type": "create.trip", "data": {"pick_up_address": "A" * 256, "drop_off_address": "B"}}),
    '{"type": "create.trip", "data": {"pick_up_address": "A\\u0000", "drop_off_address": "B"}}',
    '{"type": "create.trip", "data": {"pick_up_address": "A", "drop_off_address": "B", "pick_up_location": {"lat": 91, "lng": 0}}}',
    '{"type": "update.trip", "data": {"id": "x", "status": "FLYING"}}',
    '{"type": "update.trip", "data": {"status": "STARTED"}}',
    '{"type": "update.location", "data": {"lat": 1}}',
    '{"type": "update.location", "data": {"lat": 1, "lng": 2, "heading": 400}}',
    '{"type": "update.availability", "data": {"available": "yes"}}',
    '{"type": "teleport.trip", "data": {}}',
    '{"data": {}}',
]


@pytest.mark.parametrize("text", REFUSED)
def test_what_the_server_refuses_the_document_refuses(text):
    assert not frames.server_accepts(text, version=2)
    assert frames.matching(json.loads(text), CLIENT_MESSAGES, version=2) == []
