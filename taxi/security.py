"""Tokens and passwords: HS256 JWTs (access and refresh) and bcrypt hashing run off the event loop."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import bcrypt
import jwt

from taxi.errors import AuthenticationFailed, ValidationFailed

ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"
BCRYPT_MAX_BYTES = 72
_REQUIRED_CLAIMS = ["exp", "iat", "jti", "token_type", "id"]
CLOCK_LEEWAY = 5  # seconds of clock skew tolerated between the machines that issue and check tokens
MAX_USER_ID = 2**63 - 1  # the largest id a BIGINT (PostgreSQL) or INTEGER (SQLite) column holds
MAX_JTI = 64  # the jti column of the revoked and spent token tables


@dataclass(frozen=True)
class TokenIssuer:
    """Issues and checks the two kinds of token with one key and two lifetimes."""

    secret: str
    access_lifetime: int
    refresh_lifetime: int

    def issue(self, token_type: str, user_id: int, extra: dict[str, Any] | None = None) -> str:
        now = int(time.time())
        lifetime = self.access_lifetime if token_type == ACCESS else self.refresh_lifetime
        claims: dict[str, Any] = dict(extra or {})
        claims.update(token_type=token_type, exp=now + lifetime, iat=now, jti=uuid.uuid4().hex, id=user_id)
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def decode(self, token: str | None, expected_type: str) -> dict[str, Any]:
        """Return the claims of a valid token of ``expected_type``, or raise AuthenticationFailed.

        Checks the signature (HS256 only: ``alg: none`` and other algorithms are refused), expiry,
        issue time, the presence of every claim we rely on, and the token type.
        """
        if not token:
            raise AuthenticationFailed("Authentication credentials were not provided.")
        if not token.isascii():
            raise AuthenticationFailed("Token is invalid.", code="token_not_valid")
        try:
            claims = jwt.decode(
                token, self.secret, algorithms=[ALGORITHM], options={"require": _REQUIRED_CLAIMS}, leeway=CLOCK_LEEWAY
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("Token is expired.", code="token_not_valid") from None
        except jwt.PyJWTError:
            raise AuthenticationFailed("Token is invalid.", code="token_not_valid") from None
        if claims.get("token_type") != expected_type:
            raise AuthenticationFailed(f"Token has wrong type: expected {expected_type}.", code="token_not_valid")
        generation = claims.get("gen", 0)  # refresh tokens: see Accounts.refresh
        if not _is_user_id(claims.get("id")) or not _is_jti(claims.get("jti")) or not _is_int(generation):
            # Signed by us, yet naming no possible user or token: never let it reach a query (out of range).
            raise AuthenticationFailed("Token is invalid.", code="token_not_valid")
        return claims


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_user_id(value: Any) -> bool:
    return _is_int(value) and 1 <= value <= MAX_USER_ID


def _is_jti(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_JTI


def check_password_length(password: str, field: str = "password1") -> bytes:
    """Encode a password for bcrypt, refusing what bcrypt 5 cannot take (over 72 bytes)."""
    raw = password.encode("utf-8")
    if len(raw) > BCRYPT_MAX_BYTES:
        raise ValidationFailed.field(field, f"Ensure this field has no more than {BCRYPT_MAX_BYTES} bytes.")
    return raw


async def hash_password(password: str, rounds: int) -> str:
    """bcrypt-hash a password in a worker thread (a cost-12 hash takes ~250 ms of CPU)."""
    raw = check_password_length(password)
    loop = asyncio.get_running_loop()
    hashed = await loop.run_in_executor(None, lambda: bcrypt.hashpw(raw, bcrypt.gensalt(rounds)))
    return hashed.decode("ascii")


async def check_password(password: str, hashed: str) -> bool:
    """Compare a password with a bcrypt hash in a worker thread; False for anything malformed."""
    raw = password.encode("utf-8")
    if len(raw) > BCRYPT_MAX_BYTES:
        raw = raw[:0]  # still spend the same time below, then fail: no shortcut reveals anything
    loop = asyncio.get_running_loop()
    try:
        ok = await loop.run_in_executor(None, bcrypt.checkpw, raw, hashed.encode("ascii"))
    except ValueError:
        return False
    return bool(ok) and len(password.encode("utf-8")) <= BCRYPT_MAX_BYTES
