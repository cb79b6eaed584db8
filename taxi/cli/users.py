"""``taxi users list|create|deactivate|activate``: the accounts, as an administrator manages them."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Mapping
from typing import Any

from taxi.cli import output
from taxi.cli.common import CommandError, database, settings
from taxi.domain import GROUPS
from taxi.queries.users import AccountRow
from taxi.schemas import parse_sign_up
from taxi.services import admin

PASSWORD_VARIABLE = "TAXI_USER_PASSWORD"


def add(sub: Any) -> None:
    users = sub.add_parser("users", help="list, create, deactivate and activate users")
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="every user, oldest first")
    listing.add_argument("--group", choices=GROUPS, help="only riders or only drivers")
    listing.add_argument("--search", metavar="S", help="only users whose username or names contain S (any case)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=run_list)

    create = actions.add_parser(
        "create",
        help="a new user",
        description=f"Create a user. The password comes from {PASSWORD_VARIABLE}, or is asked twice on a terminal.",
    )
    create.add_argument("--username", required=True)
    create.add_argument("--group", required=True, choices=GROUPS)
    create.add_argument("--first-name", default="")
    create.add_argument("--last-name", default="")
    create.set_defaults(run=run_create)

    for action, active, meaning in (
        ("deactivate", False, "forbid log-in, refresh and sockets; its open sockets are closed at their next message"),
        ("activate", True, "allow a deactivated user back (it logs in again: old refresh tokens stay refused)"),
    ):
        command = actions.add_parser(action, help=meaning)
        command.add_argument("username")
        command.set_defaults(run=run_set_active, active=active)


def account_out(user: AccountRow) -> dict[str, Any]:
    return {**user._asdict(), "date_joined": user.date_joined.isoformat()}


def run_list(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    async def work() -> list[AccountRow]:
        async with database(settings(env)):
            return await admin.find_users(args.group, args.search)

    found = asyncio.run(work())
    if args.json:
        print(output.as_json([account_out(u) for u in found]))
        return 0
    rows = [
        (u.id, u.username, f"{u.first_name} {u.last_name}".strip(), u.group, u.is_active, f"{u.date_joined:%Y-%m-%d}")
        for u in found
    ]
    print(output.table(("id", "username", "name", "group", "active", "joined"), rows))
    return 0


def run_create(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    config = settings(env)
    password = env.get(PASSWORD_VARIABLE) or _ask_password()
    form = parse_sign_up(
        {
            "username": args.username,
            "group": args.group,
            "first_name": args.first_name,
            "last_name": args.last_name,
            "password1": password,
            "password2": password,
        }
    )

    async def work() -> None:
        async with database(config):
            user = await admin.create_user(form, config.bcrypt_rounds)
        print(f"created {user.group} {user.username!r} (id {user.id})")

    asyncio.run(work())
    return 0


def _ask_password() -> str:
    if not sys.stdin.isatty():
        raise CommandError(f"no password: set {PASSWORD_VARIABLE}, or run the command on a terminal to type it")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != first:
        raise CommandError("the two passwords differ; nothing was created")
    return first


def run_set_active(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    async def work() -> tuple[AccountRow, bool]:
        async with database(settings(env)):
            return await admin.set_active(args.username, args.active)

    user, changed = asyncio.run(work())
    state = "active" if user.is_active else "deactivated"
    print(f"{user.username!r} (id {user.id}) is {state}" if changed else f"{user.username!r} was already {state}")
    return 0
