"""The service side of account deletion (`EraseUserData`, the same RPC on every service).

The auth service's deletion job asks each service to erase one user's rows. A service
does it in one transaction that also adds the rows it erased to a receipt row keyed by
the erasure id (its `erasures` table: ids and counts, no user id), so a retry after a
lost answer erases whatever appeared since and answers the running totals: every row is
counted once however often the call is repeated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from runtime.errors import PermissionDenied
from runtime.ids import parse_id
from runtime.principal import require_service

# The only caller: the deletion job lives in the auth service.
ERASING_SERVICE = "auth"
# Each service's receipt table (the same name in every schema).
CREATE_ERASURES = """CREATE TABLE IF NOT EXISTS erasures (
    erasure_id uuid PRIMARY KEY,
    counts jsonb NOT NULL DEFAULT '{}',
    erased_at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""


@dataclass(frozen=True)
class ErasureRequest:
    erasure_id: str
    user_id: str
    session_ids: tuple[str, ...] = ()


def erasure_request(request: object) -> ErasureRequest:
    """The checked request: called by the auth service, with canonical ids."""
    principal = require_service()
    if principal.service != ERASING_SERVICE:
        raise PermissionDenied("only the auth service erases a user's data", reason="ERASER_NOT_AUTH")
    erasure_id = parse_id(getattr(request, "erasure_id", ""), "erasure_id")
    user_id = parse_id(getattr(request, "user_id", ""), "user_id")
    session_ids = tuple(parse_id(s, "session_ids") for s in getattr(request, "session_ids", ()))
    return ErasureRequest(erasure_id, user_id, session_ids)


def add_counts(earlier: Mapping[str, int] | None, now: Mapping[str, int]) -> dict[str, int]:
    """Running totals of an erasure: what earlier attempts erased plus this attempt."""
    totals = {name: int(count) for name, count in (earlier or {}).items()}
    for name, count in now.items():
        totals[name] = totals.get(name, 0) + int(count)
    return totals
