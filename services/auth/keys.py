"""Signing keys: generated once, stored encrypted in the database, shared by every
replica, rotated without invalidating live tokens.

The newest unretired key signs. A retired key stays in the JWKS (and keeps verifying)
until every token it signed has expired. Private keys are encrypted with AES-GCM under
a key derived from SIGNING_KEY_SECRET, so a database dump alone cannot mint tokens.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from runtime.logging import get_logger
from services.auth.store import AuthStore
from services.auth.token_queries import SigningKeyRow

log = get_logger(__name__)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private_key: object
    public_jwk: dict[str, str]
    created_at: datetime
    retired_at: datetime | None
    # Parsed once at load: building a PyJWK per verification costs more than the signature check.
    verifier: jwt.PyJWK


class KeyCipher:
    def __init__(self, secret: str, *, purpose: bytes = b"agentmesh-signing-keys") -> None:
        # One key per purpose (the HKDF salt), so sealed signing keys and sealed refresh
        # token pairs never share a key.
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=purpose, info=b"aes-gcm")
        self._aead = AESGCM(hkdf.derive(secret.encode()))

    def seal(self, plaintext: bytes, kid: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, kid.encode())

    def open(self, sealed: bytes, kid: str) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], kid.encode())


def _b64url(number_or_bytes: int | bytes) -> str:
    raw = (
        number_or_bytes
        if isinstance(number_or_bytes, bytes)
        else number_or_bytes.to_bytes((number_or_bytes.bit_length() + 7) // 8, "big")
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def generate_key(algorithm: str) -> tuple[str, object, dict[str, str]]:
    kid = uuid.uuid4().hex[:16]
    if algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = private.public_key().public_numbers()
        jwk = {"kty": "RSA", "n": _b64url(numbers.n), "e": _b64url(numbers.e)}
    jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return kid, private, jwk


class KeyRing:
    """The keys this replica signs and verifies with, reloaded from the database."""

    def __init__(self, store: AuthStore, cipher: KeyCipher, *, algorithm: str, token_ttl_s: int, rotation_days: int):
        self._store = store
        self._cipher = cipher
        self._algorithm = algorithm
        self._token_ttl = timedelta(seconds=token_ttl_s)
        self._rotation = timedelta(days=rotation_days)
        self._keys: dict[str, SigningKey] = {}
        self._loaded_at = 0.0

    async def ensure_active_key(self) -> None:
        """Creates the first key, or a new one when the active key is due for rotation.
        Serialised across replicas by an advisory lock inside the store."""
        async with self._store.signing_key_lock() as locked:
            active = await locked.active_signing_key(self._algorithm)
            if active is None or datetime.now(UTC) - active.created_at > self._rotation:
                await self._create(locked, retire=active)
        await self.reload()

    async def rotate(self) -> str:
        async with self._store.signing_key_lock() as locked:
            active = await locked.active_signing_key(self._algorithm)
            kid = await self._create(locked, retire=active)
        await self.reload()
        return kid

    async def _create(self, store: AuthStore, *, retire: SigningKeyRow | None) -> str:
        kid, private, jwk = generate_key(self._algorithm)
        pem = private.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        await store.insert_signing_key(kid, self._algorithm, self._cipher.seal(pem, kid), json.dumps(jwk))
        if retire is not None:
            await store.retire_signing_key(retire.kid)
        log.info("signing_key_created", kid=kid, retired=retire.kid if retire else None)
        return kid

    async def reload(self) -> None:
        rows = await self._store.publishable_signing_keys(self._token_ttl)
        keys = {}
        for row in rows:
            private = serialization.load_pem_private_key(self._cipher.open(row.sealed_private_key, row.kid), None)
            jwk = json.loads(row.public_jwk)
            keys[row.kid] = SigningKey(
                row.kid, row.algorithm, private, jwk, row.created_at, row.retired_at, jwt.PyJWK(jwk)
            )
        self._keys = keys
        self._loaded_at = time.monotonic()

    def loaded_age_s(self) -> float:
        return time.monotonic() - self._loaded_at

    def signing_key(self) -> SigningKey:
        candidates = [k for k in self._keys.values() if k.retired_at is None and k.algorithm == self._algorithm]
        if not candidates:
            raise RuntimeError("no active signing key loaded")
        return max(candidates, key=lambda k: k.created_at)

    def public_jwks(self) -> list[dict[str, str]]:
        return [k.public_jwk for k in sorted(self._keys.values(), key=lambda k: k.created_at, reverse=True)]

    def verification_key(self, kid: str) -> jwt.PyJWK | None:
        key = self._keys.get(kid)
        return key.verifier if key is not None else None
