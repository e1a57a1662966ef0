"""Account deletion: the auth share of the erasure, and the queue of deletion jobs that
every replica works until each job's other services have erased their share too."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

from services.auth.store_connection import StoreConnection

# Account deletion: the auth share of the erasure, in the transaction that opens the job.
# Children are deleted before the rows they cascade from, so each is counted.
ERASE_FAMILY_REVOCATIONS = text(
    "DELETE FROM token_revocations WHERE kind = 'family'"
    " AND subject IN (SELECT id FROM refresh_families WHERE user_id = :user_id)"
)
# Earlier logout-all and role-change entries: the new one (written next) refuses more.
ERASE_USER_REVOCATIONS = text("DELETE FROM token_revocations WHERE kind = 'user' AND subject = :user_id")
ERASE_REFRESH_TOKENS = text("DELETE FROM refresh_tokens WHERE user_id = :user_id")
ERASE_REFRESH_FAMILIES = text("DELETE FROM refresh_families WHERE user_id = :user_id")
ERASE_ROLE_CHANGES = text("DELETE FROM role_changes WHERE user_id = :user_id")
# The audit trail of other users keeps what an erased admin did, under a pseudonym.
ANONYMISE_ROLE_ACTOR = text("UPDATE role_changes SET actor = :pseudonym WHERE actor = :actor")
ERASE_LOGIN_FAILURES = text("DELETE FROM login_failures WHERE account_key = :key")
ERASE_USER = text("DELETE FROM users WHERE id = :user_id")

DELETION_COLUMNS = "id, user_id, session_ids, state, receipt, attempts, create_time, complete_time"
INSERT_DELETION = text(
    "INSERT INTO account_deletions (id, user_key, user_id, receipt, revocation_id, next_attempt_at)"
    " VALUES (:id, :user_key, :user_id, CAST(:receipt AS jsonb), :revocation_id,"
    " clock_timestamp() + make_interval(secs => :delay_s))"
)
DELETION_BY_ID = text(f"SELECT {DELETION_COLUMNS} FROM account_deletions WHERE id = :id")  # noqa: S608
DELETION_BY_KEY = text(f"SELECT {DELETION_COLUMNS} FROM account_deletions WHERE user_key = :user_key")  # noqa: S608
# Every replica works the queue: SKIP LOCKED hands each due job to one of them, and the
# lease lets another replica take it over if this one dies mid-job.
CLAIM_DELETIONS = text(
    "UPDATE account_deletions SET locked_until = clock_timestamp() + make_interval(secs => :lease_s)"
    " WHERE id IN (SELECT id FROM account_deletions WHERE state = 'pending'"
    " AND next_attempt_at <= clock_timestamp() AND (locked_until IS NULL OR locked_until <= clock_timestamp())"
    " ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED)"
    " RETURNING id, user_id, session_ids, state, receipt, attempts, create_time, complete_time"
)
RECORD_DELETION_STEP = text(
    "UPDATE account_deletions"
    " SET receipt = receipt || jsonb_build_object(CAST(:store AS text), CAST(:counts AS jsonb)),"
    " session_ids = coalesce(:session_ids, session_ids) WHERE id = :id AND state = 'pending'"
)
DELETION_STEP_FAILED = text(
    "UPDATE account_deletions SET attempts = attempts + 1, last_error = :error, locked_until = NULL,"
    " next_attempt_at = clock_timestamp() + make_interval(secs => :delay_s) WHERE id = :id AND state = 'pending'"
)
# Done: what identifies the user goes; the keyed hash and the counts stay.
COMPLETE_DELETION = text(
    "UPDATE account_deletions SET state = 'done', user_id = NULL, session_ids = NULL, locked_until = NULL,"
    " last_error = '', complete_time = clock_timestamp() WHERE id = :id AND state = 'pending'"
)
# A deleted user's revocation must outlive their last access token, then it goes too.
FORGET_DELETION_REVOCATIONS = text(
    "WITH gone AS (DELETE FROM token_revocations r USING account_deletions d"
    " WHERE r.id = d.revocation_id AND r.expires_at <= clock_timestamp() RETURNING r.id)"
    " UPDATE account_deletions SET revocation_id = NULL WHERE revocation_id IN (SELECT id FROM gone)"
)


@dataclass(frozen=True)
class DeletionRow:
    id: str
    user_id: str | None
    session_ids: list[str]
    state: str
    receipt: dict[str, dict[str, int]]
    attempts: int
    create_time: datetime
    complete_time: datetime | None


def _deletion(row) -> DeletionRow:
    return DeletionRow(
        str(row.id),
        str(row.user_id) if row.user_id is not None else None,
        [str(s) for s in row.session_ids or ()],
        row.state,
        dict(row.receipt),
        row.attempts,
        row.create_time,
        row.complete_time,
    )


class DeletionQueries(StoreConnection):
    async def erase_account(self, user_id: str, account_key: bytes, actor_pseudonym: str) -> dict[str, int]:
        """Deletes the account and every auth row about it; rows per table."""
        owner = {"user_id": uuid.UUID(user_id)}
        async with self._connection() as conn:
            counts = {
                "token_revocations": (await conn.execute(ERASE_FAMILY_REVOCATIONS, owner)).rowcount
                + (await conn.execute(ERASE_USER_REVOCATIONS, owner)).rowcount,
                "refresh_tokens": (await conn.execute(ERASE_REFRESH_TOKENS, owner)).rowcount,
                "refresh_families": (await conn.execute(ERASE_REFRESH_FAMILIES, owner)).rowcount,
                "role_changes": (await conn.execute(ERASE_ROLE_CHANGES, owner)).rowcount,
                "role_changes_made_anonymised": (
                    await conn.execute(ANONYMISE_ROLE_ACTOR, {"actor": f"user:{user_id}", "pseudonym": actor_pseudonym})
                ).rowcount,
                "login_failures": (await conn.execute(ERASE_LOGIN_FAILURES, {"key": account_key})).rowcount,
                "users": (await conn.execute(ERASE_USER, owner)).rowcount,
            }
        return {table: int(count) for table, count in counts.items()}

    async def insert_deletion(
        self,
        deletion_id: str,
        user_key: bytes,
        user_id: str,
        receipt: dict[str, dict[str, int]],
        revocation_id: int,
        delay_s: float,
    ) -> None:
        params = {
            "id": uuid.UUID(deletion_id),
            "user_key": user_key,
            "user_id": uuid.UUID(user_id),
            "receipt": json.dumps(receipt),
            "revocation_id": revocation_id,
            "delay_s": delay_s,
        }
        async with self._connection() as conn:
            await conn.execute(INSERT_DELETION, params)

    async def deletion(self, deletion_id: str) -> DeletionRow | None:
        async with self._connection() as conn:
            row = (await conn.execute(DELETION_BY_ID, {"id": uuid.UUID(deletion_id)})).first()
        return _deletion(row) if row else None

    async def deletion_by_key(self, user_key: bytes) -> DeletionRow | None:
        async with self._connection() as conn:
            row = (await conn.execute(DELETION_BY_KEY, {"user_key": user_key})).first()
        return _deletion(row) if row else None

    async def claim_deletions(self, limit: int, lease_s: float) -> list[DeletionRow]:
        async with self._connection() as conn:
            rows = (await conn.execute(CLAIM_DELETIONS, {"limit": limit, "lease_s": lease_s})).all()
        return [_deletion(row) for row in rows]

    async def record_deletion_step(
        self, deletion_id: str, store: str, counts: dict[str, int], session_ids: list[str] | None = None
    ) -> None:
        params = {
            "id": uuid.UUID(deletion_id),
            "store": store,
            "counts": json.dumps(counts),
            "session_ids": [uuid.UUID(s) for s in session_ids] if session_ids is not None else None,
        }
        async with self._connection() as conn:
            await conn.execute(RECORD_DELETION_STEP, params)

    async def deletion_step_failed(self, deletion_id: str, error: str, delay_s: float) -> None:
        params = {"id": uuid.UUID(deletion_id), "error": error[:500], "delay_s": delay_s}
        async with self._connection() as conn:
            await conn.execute(DELETION_STEP_FAILED, params)

    async def complete_deletion(self, deletion_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(COMPLETE_DELETION, {"id": uuid.UUID(deletion_id)})

    async def forget_deletion_revocations(self) -> int:
        async with self._connection() as conn:
            return int((await conn.execute(FORGET_DELETION_REVOCATIONS)).rowcount)
