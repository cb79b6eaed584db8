"""Schemathesis hooks for the command-line fuzz run (``SCHEMATHESIS_HOOKS=tests.api.fuzz_hooks``).

A sign-up has rules that JSON Schema cannot state and the OpenAPI description states in words: password2 equals
password1, a password is at most 72 bytes in UTF-8 (``maxLength`` counts characters), the username is not taken,
the username keeps the rules its pattern cannot state, and a photo is an image file of one of the listed types (the coverage phase sends any bytes as "binary"). Positive
sign-up cases are made to follow them (and a positive photo change gets an image). Likewise the trip list's ``cursor`` is whatever a previous page's Link gave
(signed by the server): a positive case's cursor becomes one signed with the server's secret (``TAXI_FUZZ_SECRET``),
at a random place. Every other refusal of a schema-valid request is a failure of the run.

Negative multipart sign-ups are left out: a form sends every value as text, so a value schemathesis made invalid by
its type often arrives valid (schemathesis 4.32 then reports a valid sign-up as "schema-violating request
accepted"). Negative JSON sign-ups, which keep their types on the wire, are all sent.
"""

from __future__ import annotations

import io
import itertools
import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis
from PIL import Image

from taxi import usernames
from taxi.paging import Keyset, encode_cursor
from taxi.schemas import MAX_USERNAME
from taxi.security import BCRYPT_MAX_BYTES
from taxi.services.media import FORMATS

_serial = itertools.count()
# The operations whose multipart form carries a photo (an image file, which "binary" in a schema cannot say).
_PHOTO_FORMS = ("/api/sign_up/", "/api/me/photo/")


@schemathesis.hook
def filter_case(ctx: Any, case: Any) -> bool:
    meta = case.meta
    negative = meta is not None and not meta.generation.mode.is_positive
    return not (negative and case.operation.path in _PHOTO_FORMS and case.media_type == "multipart/form-data")


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    if case.operation.path == "/api/trip/" and isinstance(case.query, dict) and "cursor" in case.query:
        place = Keyset(datetime.now(UTC) - timedelta(seconds=random.randrange(10**6)), uuid.uuid4())
        case.query["cursor"] = encode_cursor(place, os.environ["TAXI_FUZZ_SECRET"])
    if case.operation.path not in _PHOTO_FORMS:
        return case
    body = case.body
    if not isinstance(body, dict):
        return case
    if case.operation.path == "/api/me/photo/":
        _valid_photo(body)
        return case
    password = body.get("password1")
    if isinstance(password, str):
        while len(password.encode("utf-8")) > BCRYPT_MAX_BYTES:
            password = password[:-1]
        body["password1"] = body["password2"] = password
    username = body.get("username")
    if isinstance(username, str):
        # "_<n>" with n unique: the last underscore-and-digits of the name is n, so no two names are equal, even
        # ignoring case ("0" + "10" and "01" + "0" would be).
        suffix = f"_{next(_serial)}"
        username = username[: MAX_USERNAME - len(suffix)] + suffix
        # The rules a pattern cannot state (one script, no look-alikes, and a letter whose NFKC form is no longer
        # letters, such as U+013F -> "L" + U+00B7) are in the description: a name that breaks them becomes one
        # that keeps them.
        body["username"] = username if not usernames.problems(usernames.normalize(username)) else "user" + suffix
    _valid_photo(body)
    return case


def _valid_photo(body: dict[str, Any]) -> None:
    photo = body.get("photo")
    if photo is not None and not (isinstance(photo, bytes | bytearray) and _is_image(bytes(photo))):
        buf = io.BytesIO()
        Image.new("RGB", (2, 2)).save(buf, "PNG")
        body["photo"] = buf.getvalue()


def _is_image(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as im:
            im.load()
    except Exception:
        return False
    return True
