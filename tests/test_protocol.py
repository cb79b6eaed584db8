"""The WebSocket protocol without I/O: frames in, typed commands out."""

from __future__ import annotations

import uuid

import pytest

from taxi.errors import PermissionDenied, ValidationFailed
from taxi.protocol import (
    Authenticate,
    CreateTrip,
    Echo,
    ProtocolError,
    UpdateTrip,
    error_frame,
    frame,
    parse_command,
    parse_envelope,
)


def test_envelopes_parse_or_say_what_is_wrong():
    assert parse_envelope('{"type": "echo.message", "data": [1]}') == ("echo.message", [1])
    for raw, code in [
        (b"{}", "invalid_message"),
        ("{", "invalid_json"),
        ("[]", "invalid_message"),
        ("{}", "invalid_message"),
    ]:
        with pytest.raises(ProtocolError) as caught:
            parse_envelope(raw)
        assert caught.value.code == code


def test_commands_carry_typed_fields_and_identity_is_only_checked():
    trip_id = str(uuid.uuid4())
    assert parse_command("echo.message", {"x": 1}, 7) == Echo({"x": 1})
    created = parse_command("create.trip", {"pick_up_address": " A ", "drop_off_address": "B", "rider": 7}, 7)
    assert isinstance(created, CreateTrip) and created.form.pick_up_address == "A"
    update = parse_command("update.trip", {"id": trip_id, "status": "STARTED", "driver": {"id": 7}, "rider": "3"}, 7)
    assert update == UpdateTrip(uuid.UUID(trip_id), "STARTED", 3)
    with pytest.raises(PermissionDenied):
        parse_command("update.trip", {"id": trip_id, "status": "STARTED", "driver": 8}, 7)
    with pytest.raises(PermissionDenied):
        parse_command("create.trip", {"pick_up_address": "A", "drop_off_address": "B", "rider": 8}, 7)
    with pytest.raises(ValidationFailed):
        parse_command("update.trip", {"id": trip_id, "status": "FLYING"}, 7)
    with pytest.raises(ProtocolError) as caught:
        parse_command("teleport", {}, 7)
    assert caught.value.code == "unknown_type"


def test_frames_are_the_reference_envelope():
    assert frame("echo.message", {"a": 1}) == '{"type":"echo.message","data":{"a":1}}'
    assert error_frame("invalid", "bad", {"f": ["m"]}) == (
        '{"type":"error","data":{"code":"invalid","detail":"bad","fields":{"f":["m"]}}}'
    )


def test_authenticate_is_a_version_2_message_carrying_a_token():
    assert parse_command("authenticate", {"token": "abc"}, 7, version=2) == Authenticate("abc")
    with pytest.raises(ProtocolError) as caught:
        parse_command("authenticate", {"token": "abc"}, 7)
    assert caught.value.code == "unknown_type" and "version 2" in caught.value.detail
    for data in ({}, {"token": 5}, "abc", None):
        with pytest.raises(ValidationFailed):
            parse_command("authenticate", data, 7, version=2)
