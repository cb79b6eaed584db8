"""Accounts: sign-up, log-in, token refresh and log-out, and loading the caller a token names."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import bcrypt

from taxi import usernames
from taxi.errors import AuthenticationFailed, PermissionDenied, TooManyRequests, ValidationFailed
from taxi.queries import users
from taxi.queries.users import UserRow
from taxi.schemas import SignUp
from taxi.security import ACCESS, REFRESH, TokenIssuer, check_password, hash_password
from taxi.services.throttle import MemoryThrottle, Throttle

log = logging.getLogger("taxi.accounts")

BAD_CREDENTIALS = "No active account found with the given credentials"
REVOKED = "Token is blacklisted."
REUSED = "Token was already used: every refresh token of this user is now revoked; log in again."


@dataclass(frozen=True)
class LoginLimits:
    """Log-in attempts allowed per username and per client address, and sign-ups per address, in each window
    of ``window`` seconds (the values come from the settings)."""

    per_user: int
    per_address: int
    window: int
    signups_per_address: int


# The authenticated user behind a request or a socket, as stored now (not as the token remembers).
Caller = UserRow


def user_inactive() -> AuthenticationFailed:
    """The one refusal for a token whose user has since been deleted or deactivated."""
    return AuthenticationFailed("User not found or inactive.", code="user_inactive")


async def active_user(user_id: int) -> Caller:
    """The active user with this id; 401 for a deleted or deactivated one."""
    caller = await users.load_active(user_id)
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
        media_url: str | None,
        limits: LoginLimits,
        *,
        rotate_refresh: bool,
        throttle: Throttle | None = None,
    ) -> None:
        self.tokens = tokens
        self.rotate_refresh = rotate_refresh
        self.rounds = bcrypt_rounds
        self.media_url = media_url
        self.limits = limits
        self.throttle: Throttle = throttle or MemoryThrottle()

    async def check_sign_up_rate(self, address: str) -> None:
        """Sign-ups cost a bcrypt hash (and a photo decode): limited per client address, 429 past the limit."""
        limits = self.limits
        wait = await self.throttle.hit(f"signup:addr:{address}", limits.signups_per_address, limits.window)
        if wait:
            raise TooManyRequests(f"Too many sign-ups from this address; try again in {wait} seconds.", wait)

    async def sign_up(self, form: SignUp, photos: users.Photos | None) -> dict[str, Any]:
        """Create a user; a taken username is a 400 on ``username``."""
        hashed = await hash_password(form.password, self.rounds)
        photo, thumbnail = photos or (None, None)
        try:
            user = await users.create(
                form.username, hashed, form.first_name, form.last_name, form.group, photo, thumbnail
            )
        except users.UsernameTaken:
            raise ValidationFailed.field("username", "A user with that username already exists.") from None
        return user.public(self.media_url)

    async def log_in(self, username: str, password: str, address: str = "") -> dict[str, str]:
        """Check credentials and issue an access/refresh pair; one message and one cost for every failure.

        Attempts are limited per username and per client address (429 with the seconds to wait), counted
        before any password work so that a flood cannot buy CPU.
        """
        limits = self.limits
        wait = max(
            await self.throttle.hit(f"login:user:{usernames.key(username)}", limits.per_user, limits.window),
            await self.throttle.hit(f"login:addr:{address}", limits.per_address, limits.window) if address else 0,
        )
        if wait:
            raise TooManyRequests(f"Too many log-in attempts; try again in {wait} seconds.", wait)
        found = await users.find_for_login(username)
        if found is None:
            await check_password(password, await _dummy.get(self.rounds))
            raise AuthenticationFailed(BAD_CREDENTIALS, code="no_active_account")
        caller, hashed, generation = found
        if not await check_password(password, hashed):
            raise AuthenticationFailed(BAD_CREDENTIALS, code="no_active_account")
        return {"access": self.access_for(caller), "refresh": self.refresh_for(caller, generation)}

    def access_for(self, caller: Caller) -> str:
        claims = caller.public(self.media_url)
        del claims["id"]  # the issuer sets it
        return self.tokens.issue(ACCESS, caller.id, claims)

    def refresh_for(self, caller: Caller, generation: int) -> str:
        """A refresh token of the user's current generation (raising the generation revokes them all)."""
        return self.tokens.issue(REFRESH, caller.id, {"gen": generation})

    async def refresh(self, refresh_token: str) -> dict[str, str]:
        """A new access token; with rotation also a new refresh token, the presented one being retired.

        A retired token presented again means two parties hold it (one of them a thief): every refresh token of
        the user is revoked. The database decides which of two concurrent refreshes with one token wins.
        """
        claims = self.tokens.decode(refresh_token, REFRESH)
        if await users.is_revoked(claims["jti"]):
            raise AuthenticationFailed(REVOKED, code="token_not_valid")
        generation = await users.refresh_generation(claims["id"])
        if generation is None:
            raise user_inactive()
        if claims.get("gen", 0) != generation:
            raise AuthenticationFailed(REVOKED, code="token_not_valid")
        caller = await active_user(claims["id"])
        if not self.rotate_refresh:
            return {"access": self.access_for(caller)}
        if not await users.spend(claims["jti"], caller.id, dt.datetime.fromtimestamp(claims["exp"], dt.UTC)):
            await users.revoke_all_refresh_tokens(caller.id)
            log.warning("user %d presented a refresh token that was already used: revoked all of theirs", caller.id)
            raise AuthenticationFailed(REUSED, code="token_reused")
        return {"access": self.access_for(caller), "refresh": self.refresh_for(caller, generation)}

    async def log_out(self, caller: Caller, refresh_token: str) -> None:
        """Revoke a refresh token of the caller's; later refreshes with it get 401."""
        claims = self.tokens.decode(refresh_token, REFRESH)
        if claims["id"] != caller.id:
            raise PermissionDenied("This refresh token belongs to another user.")
        await users.revoke(claims["jti"], dt.datetime.fromtimestamp(claims["exp"], dt.UTC))
