"""`python -m services.auth` serves; `rotate-keys` rotates the signing key;
`grant-role --email E --role R` and `revoke-role --email E --role R` change a user's
roles (audited as the operator; the user's current access tokens stop working)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from runtime.entrypoint import exit_on_configuration_error
from runtime.errors import DomainError
from runtime.server import run
from runtime.settings import load_settings
from services.auth.app import AuthApp
from services.auth.roles import KNOWN_ROLES, Roles
from services.auth.settings import AuthSettings


async def rotate_keys(app: AuthApp) -> None:
    keys = await app.open_key_ring()
    kid = await keys.rotate()
    print(f"new signing key {kid}; the previous key keeps verifying until its tokens expire")
    await app.stop()


async def change_role(app: AuthApp, command: str, email: str, role: str) -> int:
    store = await app.open_store()
    roles = Roles(store, app.open_revocation_log(store))
    actor = f"operator:{getpass.getuser()}"
    try:
        if command == "grant-role":
            user = await roles.grant(email, role, actor=actor)
        else:
            user = await roles.revoke(email, role, actor=actor)
    except DomainError as exc:
        print(f"{command}: {exc.message}", file=sys.stderr)
        return 2
    finally:
        await app.stop()
    print(f"{user.email} ({user.id}) now has the roles: {', '.join(user.roles)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m services.auth", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the auth service (the default)")
    commands.add_parser("rotate-keys", help="create a new signing key and retire the active one")
    for name, help_text in (
        ("grant-role", "give the account with this email a role"),
        ("revoke-role", "take a role from the account with this email"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--email", required=True)
        sub.add_argument("--role", required=True, choices=KNOWN_ROLES)
    args = parser.parse_args()
    app = AuthApp(load_settings(AuthSettings))
    if args.command == "rotate-keys":
        asyncio.run(rotate_keys(app))
    elif args.command in ("grant-role", "revoke-role"):
        return asyncio.run(change_role(app, args.command, args.email, args.role))
    else:
        run(app)
    return 0


if __name__ == "__main__":
    exit_on_configuration_error(main)
