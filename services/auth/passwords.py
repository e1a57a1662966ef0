"""The password policy (the seed's rules) and bcrypt hashing off the event loop."""

from __future__ import annotations

import asyncio
import re

import bcrypt

from runtime.errors import InvalidArgument

MIN_LENGTH = 8
MAX_LENGTH = 64
# bcrypt only reads 72 bytes (and bcrypt>=5 refuses more); 64 multi-byte characters can exceed it.
MAX_BYTES = 72
SPECIAL = re.compile(r"[^A-Za-z0-9\s]")

# Checked in order; the first rule a password breaks is named in the error.
RULES: list[tuple[str, str, re.Pattern[str] | None]] = [
    ("PASSWORD_TOO_SHORT", f"password must be at least {MIN_LENGTH} characters long", None),
    ("PASSWORD_TOO_LONG", f"password must be at most {MAX_LENGTH} characters long", None),
    ("PASSWORD_NEEDS_UPPERCASE", "password must contain at least one uppercase letter", re.compile(r"[A-Z]")),
    ("PASSWORD_NEEDS_DIGIT", "password must contain at least one number", re.compile(r"[0-9]")),
    ("PASSWORD_NEEDS_SPECIAL", "password must contain at least one special character", SPECIAL),
]


def check_password_policy(password: str) -> None:
    if len(password) < MIN_LENGTH:
        reason, message, _ = RULES[0]
        raise InvalidArgument(message, reason=reason)
    if len(password) > MAX_LENGTH or len(password.encode()) > MAX_BYTES:
        reason, message, _ = RULES[1]
        raise InvalidArgument(message, reason=reason)
    for reason, message, pattern in RULES[2:]:
        if pattern is not None and not pattern.search(password):
            raise InvalidArgument(message, reason=reason)


class PasswordHasher:
    def __init__(self, rounds: int) -> None:
        self._rounds = rounds
        # Verifying against this when the email is unknown makes a failed login cost
        # the same whether or not the account exists.
        self._decoy = bcrypt.hashpw(b"decoy-password", bcrypt.gensalt(rounds))

    async def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(self._rounds)
        hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), salt)
        return hashed.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        candidate = password.encode()
        usable = len(candidate) <= MAX_BYTES
        target = hashed.encode() if hashed and usable else self._decoy
        matches = await asyncio.to_thread(bcrypt.checkpw, candidate[:MAX_BYTES], target)
        return matches and usable and hashed is not None
