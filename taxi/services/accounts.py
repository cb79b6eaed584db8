"""Accounts: sign-up, log-in, token refresh and log-out, and loading the caller a token names."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any

import bcrypt
import peewee

from taxi import db as dbm
from taxi.errors import AuthenticationFailed, PermissionDenied, TooManyRequests, ValidationFailed
from taxi.models import RevokedToken, User, utcnow
from taxi.schemas import SignUp, user_out
from taxi.security import ACCESS, REFRESH, TokenIssuer, check_password, hash_password
from taxi.services.throttle import MemoryThrottle, Throttle

BAD_CREDENTIALS = "No active account found with the given credentials"


@dataclass(frozen=True)
class LoginLimits:
    """Log-in attempts allowed per username and per client address in each window of ``window`` seconds."""

    per_user: int = 10
    per_address: int = 50
    window: int = 60
    signups_per_address: int = 20


@dataclass(frozen=True)
class Caller:
    """The authenticated user behind a request or a socket, as stored now (not as the token remembers)."""

    id: int
    username: str
    first_name: str
    last_name: str
    group: str
    photo: str | None

    def public(self, public_url: str | None) -> dict[str, Any]:
        return user_out(self.id, self.username, self.first_name, self.last_name, self.group, self.photo, public_url)


_LOAD_CALLER = dbm.SQL(
    "SELECT id, username, first_name, last_name, role, photo FROM taxi_user WHERE id = {p} AND is_active",
    name="taxi_load_caller",
)
_FIND_LOGIN = dbm.SQL(
    "SELECT id, username, first_name, last_name, role, photo, password FROM taxi_user "
    "WHERE username = {p} AND is_active"
)
_IS_REVOKED = dbm.SQL("SELECT 1 FROM taxi_revoked_token WHERE jti = {p}")


async def load_caller(user_id: int) -> Caller | None:
    """The active user with this id, or None if they were deleted or deactivated."""
    rows = await dbm.fetch_all(_LOAD_CALLER, (user_id,))
    return Caller(*rows[0]) if rows else None


def user_inactive() -> AuthenticationFailed:
    """The one refusal for a token whose user has since been deleted or deactivated."""
    return AuthenticationFailed("User not found or inactive.", code="user_inactive")


async def active_user(user_id: int) -> Caller:
    """The active user with this id; 401 for a deleted or deactivated one."""
    caller = await load_caller(user_id)
    if caller is None:
        raise user_inactive()
    return caller


class _DummyHash:
    """A hash to check unknown usernames against, so that log-in takes as long whether or not the user exists."""

    def __init__(self) -> None:
        self._hashes: dict[int, bytes] = {}
        self._lock = asyncio.Lock()

    async def get(self, rounds: int) -> str:
        if rounds not in self._hashes:
            async with self._lock:
                if rounds not in self._hashes:
                    loop = asyncio.get_running_loop()
                    self._hashes[rounds] = await loop.run_in_executor(
                        None, lambda: bcrypt.hashpw(b"not a real password", bcrypt.gensalt(rounds))
                    )
        return self._hashes[rounds].decode("ascii")


_dummy = _DummyHash()


class Accounts:
    """Account operations bound to one token issuer and hashing cost."""

    def __init__(
        self,
        tokens: TokenIssuer,
        bcrypt_rounds: int,
        public_url: str | None,
        limits: LoginLimits | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.tokens = tokens
        self.rounds = bcrypt_rounds
        self.public_url = public_url
        self.limits = limits or LoginLimits()
        self.throttle: Throttle = throttle or MemoryThrottle()

    async def check_sign_up_rate(self, address: str) -> None:
        """Sign-ups cost a bcrypt hash (and a photo decode): limited per client address, 429 past the limit."""
        limits = self.limits
        wait = await self.throttle.hit(f"signup:addr:{address}", limits.signups_per_address, limits.window)
        if wait:
            raise TooManyRequests(f"Too many sign-ups from this address; try again in {wait} seconds.", wait)

    async def sign_up(self, form: SignUp, photo: str | None) -> dict[str, Any]:
        """Create a user; a taken username is a 400 on ``username``."""
        hashed = await hash_password(form.password, self.rounds)
        try:
            user = await User.aio_create(
                username=form.username,
                password=hashed,
                first_name=form.first_name,
                last_name=form.last_name,
                group=form.group,
                photo=photo,
            )
        except peewee.IntegrityError:
            raise ValidationFailed.field("username", "A user with that username already exists.") from None
        return user_out(user.id, user.username, user.first_name, user.last_name, user.group, photo, self.public_url)

    async def log_in(self, username: str, password: str, address: str = "") -> dict[str, str]:
        """Check credentials and issue an access/refresh pair; one message and one cost for every failure.

        Attempts are limited per username and per client address (429 with the seconds to wait), counted
        before any password work so that a flood cannot buy CPU.
        """
        limits = self.limits
        wait = max(
            await self.throttle.hit(f"login:user:{username.casefold()}", limits.per_user, limits.window),
            await self.throttle.hit(f"login:addr:{address}", limits.per_address, limits.window) if address else 0,
        )
        if wait:
            raise TooManyRequests(f"Too many log-in attempts; try again in {wait} seconds.", wait)
        rows = await dbm.fetch_all(_FIND_LOGIN, (username,))
        if not rows:
            await check_password(password, await _dummy.get(self.rounds))
            raise AuthenticationFailed(BAD_CREDENTIALS, code="no_active_account")
        *fields, hashed = rows[0]
        if not await check_password(password, hashed):
            raise AuthenticationFailed(BAD_CREDENTIALS, code="no_active_account")
        caller = Caller(*fields)
        return {"access": self.access_for(caller), "refresh": self.tokens.issue(REFRESH, caller.id)}

    def access_for(self, caller: Caller) -> str:
        claims = caller.public(self.public_url)
        del claims["id"]  # the issuer sets it
        return self.tokens.issue(ACCESS, caller.id, claims)

    async def refresh(self, refresh_token: str) -> dict[str, str]:
        claims = self.tokens.decode(refresh_token, REFRESH)
        if await dbm.fetch_all(_IS_REVOKED, (claims["jti"],)):
            raise AuthenticationFailed("Token is blacklisted.", code="token_not_valid")
        caller = await active_user(claims["id"])
        return {"access": self.access_for(caller)}

    async def log_out(self, caller: Caller, refresh_token: str) -> None:
        """Revoke a refresh token of the caller's; later refreshes with it get 401."""
        claims = self.tokens.decode(refresh_token, REFRESH)
        if claims["id"] != caller.id:
            raise PermissionDenied("This refresh token belongs to another user.")
        expires = dt.datetime.fromtimestamp(claims["exp"], dt.UTC)
        await RevokedToken.insert(jti=claims["jti"], expires_at=expires).on_conflict_ignore().aio_execute()
        # Revocations only matter until the token would have expired anyway.
        await RevokedToken.delete().where(RevokedToken.expires_at < utcnow()).aio_execute()
