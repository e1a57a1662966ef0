"""Account deletion: the account is unusable at once, the erasure is a durable job.

DeleteAccount checks the password (throttled like Login), then in one transaction
deletes the account with every auth row about it (refresh tokens and families, its
revocations, its role-change audit rows), refuses every access token issued so far (a
`user` revocation, pushed to every service within seconds) and writes the job row. From
the commit on nobody can log in, refresh or call a service as that user.

The job asks each other service to erase the user (`EraseUserData`: sessions, then the
agent with the session ids, then memory and evals) and records each answer in the job
row. Every auth replica works the queue (SKIP LOCKED claims with a lease); a service that
fails or is down makes the job wait with jittered exponential backoff and retry from the
first step not yet confirmed, until every service has. The services count per erasure
id, so a retried step counts each row once.

What stays, deliberately: the finished job row, with a keyed hash of the user id (HMAC
under a key derived from SIGNING_KEY_SECRET: it answers a repeated request and proves
an erasure to an operator who already knows the id, but does not reveal it) and the
counts; the `user` revocation until the last access token it refuses has expired
(ACCESS_TOKEN_TTL_S + 60 s), then it is deleted too; role changes the user made as an
admin to other accounts, with the actor replaced by a pseudonym from the same hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import random
import time
import uuid
from dataclasses import dataclass

from runtime.database_errors import database_unavailable
from runtime.errors import DomainError, NotFound, PermissionDenied
from runtime.logging import get_logger
from services.auth.deletion_queries import DeletionRow
from services.auth.erasure_calls import STEPS, ServiceErasers
from services.auth.passwords import PasswordHasher
from services.auth.revocations import RevocationLog
from services.auth.store import AuthStore
from services.auth.throttle import LoginThrottle, account_key

log = get_logger(__name__)

AUTH_STORE = "auth"
CLAIM_BATCH = 10
PSEUDONYM_PREFIX = "erased-user:"


@dataclass(frozen=True)
class DeletionSettings:
    # The first erasure waits until every service refuses the user's tokens, so no write
    # made with one can land after its service's erasure.
    start_delay_s: float
    # How long DeleteAccount waits for the job before answering PENDING.
    wait_s: float
    poll_s: float
    max_backoff_s: float
    # A claimed job belongs to its replica this long (then another may take it over).
    lease_s: float


def retry_delay_s(attempts: int, max_backoff_s: float) -> float:
    """Jittered exponential backoff: ~1 s, 2 s, 4 s ... up to max_backoff_s."""
    ceiling = min(max_backoff_s, 2.0 ** min(attempts, 16))
    return ceiling * (0.5 + random.random() / 2)


class UserKeys:
    """Keyed hashes of user ids: what is left of an erased user."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"agentmesh-erased-users:" + secret.encode()).digest()

    def key(self, user_id: str) -> bytes:
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).digest()

    def pseudonym(self, user_id: str) -> str:
        return PSEUDONYM_PREFIX + self.key(user_id).hex()[:16]


class AccountDeletions:
    def __init__(
        self,
        store: AuthStore,
        hasher: PasswordHasher,
        throttle: LoginThrottle,
        revocations: RevocationLog,
        erasers: ServiceErasers,
        keys: UserKeys,
        settings: DeletionSettings,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._throttle = throttle
        self._revocations = revocations
        self._erasers = erasers
        self._keys = keys
        self._settings = settings
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    async def delete_account(self, user_id: str, password: str) -> DeletionRow:
        """Ends the account now and starts its erasure; the job as it stands after at most
        DeletionSettings.wait_s (done, or pending with the stores confirmed so far)."""
        user = await self._store.user_by_id(user_id)
        if user is None:
            return await self._earlier_deletion(user_id)
        key = account_key(user.email)
        await self._throttle.check(key)
        if not await self._hasher.verify(password, user.password_hash):
            await self._throttle.record_failure(key)
            raise PermissionDenied("the password is incorrect", reason="PASSWORD_INCORRECT")
        deletion_id = str(uuid.uuid4())
        async with self._store.transaction() as tx:
            # The row lock serialises a double submit: the second finds the account gone.
            if await tx.user_for_role_change(user_id) is None:
                deletion_id = ""
            else:
                counts = await tx.erase_account(user_id, key, self._keys.pseudonym(user_id))
                revocation_id = await self._revocations.revoke_user(user_id, tx)
                await tx.insert_deletion(
                    deletion_id,
                    self._keys.key(user_id),
                    user_id,
                    {AUTH_STORE: counts},
                    revocation_id,
                    self._settings.start_delay_s,
                )
        if not deletion_id:
            return await self._earlier_deletion(user_id)
        log.info("account_deletion_started", deletion_id=deletion_id)
        self._wake.set()
        return await self._wait(deletion_id)

    async def _earlier_deletion(self, user_id: str) -> DeletionRow:
        deletion = await self._store.deletion_by_key(self._keys.key(user_id))
        if deletion is None:
            raise NotFound("the account no longer exists", reason="USER_NOT_FOUND")
        return await self._wait(deletion.id)

    async def _wait(self, deletion_id: str) -> DeletionRow:
        deadline = time.monotonic() + self._settings.wait_s
        while True:
            deletion = await self._store.deletion(deletion_id)
            assert deletion is not None  # job rows are never deleted
            if deletion.state == "done" or time.monotonic() >= deadline:
                return deletion
            await asyncio.sleep(0.2)

    # ---- the job ----------------------------------------------------------------------

    def start(self) -> None:
        self._worker = asyncio.create_task(self._work_forever(), name="account-deletions")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def work_once(self) -> int:
        """Claims the due jobs and advances each as far as the services allow."""
        await self._store.forget_deletion_revocations()
        jobs = await self._store.claim_deletions(CLAIM_BATCH, self._settings.lease_s)
        for job in jobs:
            await self._advance(job)
        return len(jobs)

    async def _advance(self, job: DeletionRow) -> None:
        """Runs the steps not confirmed yet, in order; the first failure ends the attempt
        (the job waits out its backoff and goes on from that step)."""
        assert job.user_id is not None  # pending jobs keep it
        session_ids = job.session_ids
        step = ""
        try:
            for step in STEPS:
                if step in job.receipt:
                    continue
                result = await self._erasers.erase(step, job.id, job.user_id, session_ids)
                if result.session_ids is not None:
                    session_ids = result.session_ids
                await self._store.record_deletion_step(job.id, step, result.counts, result.session_ids)
            step = "sessions"
            await self._erasers.forget_session_ids(job.id, job.user_id)
        except DomainError as exc:
            delay = retry_delay_s(job.attempts, self._settings.max_backoff_s)
            await self._store.deletion_step_failed(job.id, f"{step}: {exc.reason}", delay)
            log.warning("account_deletion_step_failed", deletion_id=job.id, step=step, error=exc.reason)
            return
        await self._store.complete_deletion(job.id)
        log.info("account_deletion_completed", deletion_id=job.id, attempts=job.attempts + 1)

    async def _work_forever(self) -> None:
        while True:
            try:
                # A full batch may mean more are due: go again at once.
                if await self.work_once() >= CLAIM_BATCH:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next round retries
                if database_unavailable(exc):
                    log.warning("account_deletion_round_failed", error="DATABASE_UNAVAILABLE")
                else:
                    log.exception("account_deletion_round_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.poll_s)
            self._wake.clear()
