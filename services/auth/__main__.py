"""`python -m services.auth` serves; `python -m services.auth rotate-keys` rotates the signing key."""

from __future__ import annotations

import argparse
import asyncio

from services.auth.app import AuthApp
from services.auth.settings import AuthSettings
from services.common.server import run
from services.common.settings import load_settings


async def rotate_keys(app: AuthApp) -> None:
    keys = await app.open_key_ring()
    kid = await keys.rotate()
    print(f"new signing key {kid}; the previous key keeps verifying until its tokens expire")
    await app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.auth", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "rotate-keys"], default="serve")
    args = parser.parse_args()
    app = AuthApp(load_settings(AuthSettings))
    if args.command == "rotate-keys":
        asyncio.run(rotate_keys(app))
    else:
        run(app)


if __name__ == "__main__":
    main()
