"""The log formatters: masked credentials whatever their shape, and the JSON line's fields."""

from __future__ import annotations

import json
import logging

import pytest

from taxi import logs

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6MX0.c2lnbmF0dXJlLXN0YW5kLWlu"


@pytest.mark.parametrize(
    "line",
    [
        f"Exception occurred while handling uri: 'ws://127.0.0.1:8000/taxi/?token={JWT}'",
        f"GET /taxi/?protocol=2&token={JWT[:20]} 401",
        "headers: {'authorization': 'Bearer s3cr3t-metrics-token'}",
        'body b\'{"username": "a", "password": "hunter2hunter2"}\'',
        'body {"refresh": "opaque-refresh-value", "access":"opaque-access-value"}',
        "form password1=hunter2hunter2&password2=hunter2hunter2&group=rider",
    ],
)
def test_credentials_are_masked_in_every_shape(line):
    masked = logs.redact(line)
    assert logs.MASK in masked
    for secret in (JWT, JWT[:20], "s3cr3t-metrics-token", "hunter2", "opaque-refresh-value", "opaque-access-value"):
        assert secret not in masked, masked


def test_json_lines_carry_the_request_id_and_the_fields_and_mask_the_traceback():
    record = logging.LogRecord("taxi.test", logging.ERROR, __file__, 1, "failed for %s", (f"?token={JWT}",), None)
    try:
        raise RuntimeError(f"Bearer {JWT}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    record.fields = {"status": 500}
    token = logs.request_id.set("req-1")
    try:
        entry = json.loads(logs.JSONFormatter().format(record))
    finally:
        logs.request_id.reset(token)
    assert entry["request_id"] == "req-1" and entry["status"] == 500 and entry["level"] == "ERROR"
    assert entry["logger"] == "taxi.test" and entry["worker"] == "MainProcess"
    assert JWT not in json.dumps(entry) and "RuntimeError" in entry["exception"]
    text = logs.TextFormatter().format(record)
    assert JWT not in text
