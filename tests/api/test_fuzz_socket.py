"""Fuzzing the /taxi/ WebSocket (hypothesis, bounded): random text and binary frames, random and deeply nested
JSON, wrong types in every field of every message type. Each gets an answer in the documented shape, the
socket keeps working, and a neighbouring socket on the same worker keeps receiving its broadcasts."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from tests.support import log_in, sign_up
from tests.wsclient import ask, connect, recv, trip_request

EXAMPLES = int(os.environ.get("TAXI_FUZZ_EXAMPLES", "40")) * 4
ERROR_CODES = {
    "invalid_json",
    "invalid_message",
    "unknown_type",
    "invalid",
    "forbidden",
    "not_found",
    "trip_unavailable",
    "invalid_transition",
    "unavailable",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25,
)
user_ids = json_values | st.sampled_from(["\u00b2", "9" * 5000, 2**63, -(2**63), 0, "0", "1", 1])
statuses = st.sampled_from(["REQUESTED", "STARTED", "IN_PROGRESS", "COMPLETED"]) | json_values
trip_ids = st.uuids().map(str) | json_values
create_data = st.fixed_dictionaries(
    {},
    optional={
        "pick_up_address": json_values | st.text(max_size=300),
        "drop_off_address": json_values | st.text(),
        "rider": json_values,
    },
)
update_data = st.fixed_dictionaries(
    {}, optional={"id": trip_ids, "status": statuses, "driver": json_values, "rider": json_values}
)
messages = (
    st.fixed_dictionaries({"type": st.just("create.trip"), "data": create_data | json_values})
    | st.fixed_dictionaries({"type": st.just("update.trip"), "data": update_data | json_values})
    | st.fixed_dictionaries({"type": st.just("echo.message"), "data": json_values})
    | st.fixed_dictionaries({}, optional={"type": json_values | st.text(max_size=20), "data": json_values})
)
frames = (
    messages.map(json.dumps)
    | st.text(max_size=200)
    | st.binary(max_size=200)
    | st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)
    | st.integers(1, 3000).map(lambda n: '{"a":' * n + "1" + "}" * n)
    | json_values.map(json.dumps)
)


@pytest.fixture
def settings(deployment):
    # Frames as fast as the server answers, far past a phone's rate: what is fuzzed here is parsing, and every
    # example waits for its marker's echo, which a rate_limited answer would replace (tests/api/test_socket_limits).
    return dataclasses.replace(deployment, ws_messages_per_s=100_000)


def test_random_frames_never_break_a_socket_or_its_neighbours(client, app):
    rider = sign_up(client, "rider@example.com") | log_in(client, "rider@example.com")
    driver = sign_up(client, "driver@example.com", group="driver") | log_in(client, "driver@example.com")
    fuzzer_r = sign_up(client, "fuzz-r@example.com") | log_in(client, "fuzz-r@example.com")
    fuzzer_d = sign_up(client, "fuzz-d@example.com", group="driver") | log_in(client, "fuzz-d@example.com")
    base = f"ws://127.0.0.1:{client.port}"
    state: dict = {}
    seen_codes: dict[str, int] = {}

    async def open_all():
        state["neighbour"] = await connect(base, driver["access"])
        state["rider"] = await connect(base, rider["access"])
        state["fuzz"] = [await connect(base, fuzzer_r["access"]), await connect(base, fuzzer_d["access"])]

    async def exchange(ws, frame, n: int) -> list[dict]:
        """Send a fuzz frame, then an echo marker; return everything that came back before the marker."""
        await ws.send(frame)
        marker = f"marker-{n}"
        await ws.send(json.dumps({"type": "echo.message", "data": marker}))
        replies = []
        while True:
            msg = await recv(ws)
            if msg == {"type": "echo.message", "data": marker}:
                return replies
            replies.append(msg)

    async def neighbour_hears_a_broadcast():
        trip = (await ask(state["rider"], "create.trip", trip_request()))["data"]
        while True:  # the neighbour may first hear trips the fuzzers created
            heard = await recv(state["neighbour"])
            if heard["data"]["id"] == trip["id"]:
                return

    client._run(open_all())
    counter = {"n": 0}

    @examples(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(frame=frames, which=st.integers(0, 1))
    def run(frame, which):
        counter["n"] += 1
        ws = state["fuzz"][which]
        replies = client._run(exchange(ws, frame, counter["n"]))
        own = [r for r in replies if r["type"] == "error"]
        for reply in replies:
            assert set(reply) == {"type", "data"}, reply
            assert reply["type"] in {"echo.message", "error"}, reply
            if reply["type"] == "error":
                assert reply["data"]["code"] in ERROR_CODES and isinstance(reply["data"]["detail"], str), reply
                seen_codes[reply["data"]["code"]] = seen_codes.get(reply["data"]["code"], 0) + 1
        assert len(own) <= 1, replies
        if counter["n"] % 20 == 0:
            client._run(neighbour_hears_a_broadcast())

    run()
    client._run(neighbour_hears_a_broadcast())
    assert counter["n"] >= EXAMPLES // 2
    # The fuzz sockets are still the very same open sockets.
    for ws in state["fuzz"]:
        replies = client._run(exchange(ws, json.dumps({"type": "echo.message", "data": "still here"}), 10**6))
        assert {"type": "echo.message", "data": "still here"} in replies
    print(f"{counter['n']} fuzz frames; error codes seen: {seen_codes}")
    assert {"invalid_json", "invalid_message", "invalid"} <= set(seen_codes)

    async def close_all():
        for ws in (state["neighbour"], state["rider"], *state["fuzz"]):
            await ws.close()

    client._run(close_all())
