"""Accounts for a load run, made through the API: POST /api/sign_up/, then POST /api/log_in/ for an access token."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from taxiload.harness import call


@dataclass
class Account:
    id: int
    username: str
    group: str
    access: str  # the access token


def make_account(base: str, username: str, group: str, first_name: str, hint: str = "") -> Account:
    """Sign up ``username`` in ``group`` with a random password and log it in; RuntimeError (plus ``hint`` after
    a 429) if the server refuses."""
    password = secrets.token_urlsafe(12)
    form = {"username": username, "password1": password, "password2": password, "group": group}
    status, user = call(base + "/api/sign_up/", form | {"first_name": first_name, "last_name": group})
    if status != 201:
        raise RuntimeError(f"POST /api/sign_up/ ({username}): HTTP {status} {user}{hint if status == 429 else ''}")
    status, tokens = call(base + "/api/log_in/", {"username": username, "password": password})
    if status != 200:
        raise RuntimeError(f"POST /api/log_in/ ({username}): HTTP {status} {tokens}{hint if status == 429 else ''}")
    return Account(int(user["id"]), username, group, str(tokens["access"]))


def make_accounts(base: str, group: str, count: int, first_name: str, hint: str = "") -> list[Account]:
    """``count`` new accounts of a group, named <first_name>_<group>_<hex>_<i> in lower case, 8 at a time."""
    tag = secrets.token_hex(3)
    with ThreadPoolExecutor(8) as pool:
        return list(
            pool.map(
                lambda i: make_account(base, f"{first_name.lower()}_{group}_{tag}_{i}", group, first_name, hint),
                range(count),
            )
        )
