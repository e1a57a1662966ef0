"""The one spelling of an id: a lower-case, hyphenated UUID (`str(uuid.uuid4())`).

`uuid.UUID()` accepts upper case, no hyphens, braces and `urn:uuid:`; an id used as a
thread id, lock key or cache key would then name the same thing several ways (two turns
on two spellings of one session both run; deleting it leaves the other spelling's state).
Every service therefore accepts exactly the canonical form and refuses the rest with
INVALID_ARGUMENT, so a raw id string can be compared and keyed on safely downstream.
"""

from __future__ import annotations

import re
import uuid

from runtime.errors import InvalidArgument, PermissionDenied
from runtime.principal import Principal

CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _reason(field: str, suffix: str) -> str:
    return f"{field.removesuffix('_id').upper()}_ID_{suffix}"


def is_canonical_id(value: str) -> bool:
    return CANONICAL_UUID.fullmatch(value) is not None


def parse_id(value: str, field: str, *, required: bool = True) -> str:
    """`value` unchanged if it is a canonical UUID; INVALID_ARGUMENT naming `field` otherwise.

    `field` is the request field ("session_id"); the reason is derived from it
    (SESSION_ID_REQUIRED, SESSION_ID_INVALID). With `required=False` an empty value is
    returned as "" (an optional filter or reference)."""
    if not value:
        if not required:
            return ""
        raise InvalidArgument(f"{field} is required", reason=_reason(field, "REQUIRED"))
    if not is_canonical_id(value):
        raise InvalidArgument(
            f"{field} must be a lower-case hyphenated UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
            reason=_reason(field, "INVALID"),
            metadata={"field": field},
        )
    return value


def parse_uuid(value: str, field: str) -> uuid.UUID:
    """Like `parse_id` (required), as a `uuid.UUID` for the database."""
    return uuid.UUID(parse_id(value, field))


def acting_user_id(principal: Principal) -> str:
    """The user whose data a call touches: the caller, or the user a service acts for.

    A service token alone names no user (its subject is `service:<name>`), and
    `x-on-behalf-of` is a header any service can set to anything: both are checked here so
    a user-scoped query never sees a non-UUID (which would be an INTERNAL error)."""
    if not principal.is_service:
        return principal.user_id
    if not principal.on_behalf_of:
        raise PermissionDenied(
            "this call reads or changes a user's data: a service must act on behalf of a user",
            reason="ON_BEHALF_OF_REQUIRED",
        )
    if not is_canonical_id(principal.on_behalf_of):
        raise InvalidArgument("x-on-behalf-of must be a user id (a lower-case UUID)", reason="ON_BEHALF_OF_INVALID")
    return principal.on_behalf_of
