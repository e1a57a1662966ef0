"""Access tokens forged in tests with the auth service's real signing key."""

from __future__ import annotations

import jwt

from services.auth.keys import SigningKey


def sign(key: SigningKey, payload: dict, **header: str) -> str:
    return jwt.encode(payload, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, **header})
