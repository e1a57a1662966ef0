"""Revoked access tokens, known locally so verification never needs a network hop.

Access tokens are stateless JWTs; to end one before its `exp` the auth service records a
revocation (a whole refresh token family, or every token of a user issued before a time)
and streams it to every service (WatchRevocations). Each process keeps the live entries
in a `RevocationSet` that the token verifier consults on every call, cached tokens
included. An entry lives until every token it can refuse has expired anyway.

`RevocationFeed` is the subscriber every service runs: it re-fetches the whole set on
every (re)connect, so a restarted service knows what was revoked before it started, and
it keeps what it knows while auth is unreachable (known revocations stay refused, all
other tokens keep working).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Protocol

import grpc

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from runtime.logging import get_logger
from runtime.principal import Principal

log = get_logger(__name__)

FAMILY = "family"
USER = "user"
PRUNE_INTERVAL_S = 30.0


@dataclass(frozen=True)
class Revocation:
    kind: str  # FAMILY or USER
    subject: str  # family id or user id
    expires_at: float  # unix seconds
    not_before: float = 0.0  # USER: tokens with an earlier `iat` are refused

    def to_message(self) -> auth_pb2.Revocation:
        message = auth_pb2.Revocation()
        if self.kind == FAMILY:
            message.family_id = self.subject
        else:
            message.user_id = self.subject
            message.not_before.FromNanoseconds(int(self.not_before * 1e9))
        message.expire_time.FromNanoseconds(int(self.expires_at * 1e9))
        return message

    @classmethod
    def from_message(cls, message: auth_pb2.Revocation) -> Revocation | None:
        target = message.WhichOneof("target")
        expires_at = message.expire_time.ToNanoseconds() / 1e9
        if target == "family_id":
            return cls(FAMILY, message.family_id, expires_at)
        if target == "user_id":
            return cls(USER, message.user_id, expires_at, message.not_before.ToNanoseconds() / 1e9)
        return None


class RevocationSet:
    """The live revocations this process knows; lookups are two dictionary probes."""

    def __init__(self) -> None:
        self._families: dict[str, float] = {}
        self._users: dict[str, tuple[float, float]] = {}  # user id -> (not_before, expires_at)
        self._synced = asyncio.Event()
        self._pruned_at = time.monotonic()

    def apply(self, revocation: Revocation) -> None:
        if revocation.kind == FAMILY:
            self._families[revocation.subject] = max(revocation.expires_at, self._families.get(revocation.subject, 0))
        elif revocation.kind == USER:
            not_before, expires_at = self._users.get(revocation.subject, (0.0, 0.0))
            self._users[revocation.subject] = (
                max(not_before, revocation.not_before),
                max(expires_at, revocation.expires_at),
            )

    def mark_synced(self) -> None:
        self._synced.set()

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), timeout_s)
        return self._synced.is_set()

    def refuses(self, principal: Principal) -> bool:
        if principal.family_id and principal.family_id in self._families:
            return True
        user = self._users.get(principal.user_id)
        return user is not None and principal.issued_at < user[0]

    def entries(self) -> list[Revocation]:
        now = time.time()
        families = [Revocation(FAMILY, fid, exp) for fid, exp in self._families.items() if exp > now]
        users = [Revocation(USER, uid, exp, nb) for uid, (nb, exp) in self._users.items() if exp > now]
        return families + users

    def prune(self) -> None:
        """Forgets entries whose tokens have all expired (cheap, rate-limited)."""
        if time.monotonic() - self._pruned_at < PRUNE_INTERVAL_S:
            return
        self._pruned_at = time.monotonic()
        now = time.time()
        self._families = {fid: exp for fid, exp in self._families.items() if exp > now}
        self._users = {uid: entry for uid, entry in self._users.items() if entry[1] > now}

    def __len__(self) -> int:
        return len(self._families) + len(self._users)


class MetadataSource(Protocol):
    """What the feed authenticates with (a ServiceIdentity)."""

    async def metadata(self, on_behalf_of: str | None = None) -> tuple[tuple[str, str], ...]: ...


class RevocationFeed:
    """Keeps a RevocationSet in step with the auth service, reconnecting with backoff."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        identity: MetadataSource,
        revocations: RevocationSet,
        *,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._identity = identity
        self._revocations = revocations
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow_forever(), name="revocation-feed")

    async def _follow_forever(self) -> None:
        backoff = self._backoff_initial_s
        while True:
            try:
                metadata = await self._identity.metadata()
                stream = self._stub.WatchRevocations(auth_pb2.WatchRevocationsRequest(), metadata=metadata)
                async for batch in stream:
                    for message in batch.revocations:
                        revocation = Revocation.from_message(message)
                        if revocation is not None:
                            self._revocations.apply(revocation)
                    if batch.snapshot_complete:
                        if not self._revocations.synced:
                            log.info("revocations_synced", count=len(self._revocations))
                        self._revocations.mark_synced()
                        backoff = self._backoff_initial_s
                    self._revocations.prune()
                log.info("revocation_feed_ended")
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.warning("revocation_feed_failed", code=exc.code().name, retry_in_s=backoff)
            except Exception as exc:  # the feed must outlive any one failure
                log.warning("revocation_feed_failed", error=type(exc).__name__, retry_in_s=backoff)
            # Whatever is already known stays in force while disconnected.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._backoff_max_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
