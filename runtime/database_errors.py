"""Which exceptions mean "the database is not answering" (a retryable UNAVAILABLE), as
opposed to a bug or a bad statement (INTERNAL).

Kept free of driver imports: the interceptor uses it in every service, and it must
recognise asyncpg, psycopg and SQLAlchemy errors alike (by module, name and SQLSTATE,
walking the exception chain, since SQLAlchemy wraps the driver's error in `.orig`).
"""

from __future__ import annotations

from types import TracebackType

_DRIVER_MODULES = ("asyncpg", "psycopg", "psycopg_pool", "sqlalchemy")
# Connection exceptions (08), operator intervention (57: admin shutdown, crash shutdown,
# cannot connect now, and query_canceled, which statement_timeout raises), insufficient
# resources (53: too many connections, out of memory or disk).
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "57", "53")
# Driver errors raised before (or without) any SQLSTATE: refused or dropped connections,
# connect and pool timeouts.
_UNAVAILABLE_DRIVER_ERRORS = frozenset(
    {
        "OperationalError",
        "InterfaceError",
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "InternalClientError",
        "TimeoutError",
        "PoolTimeout",
        "TooManyRequests",
        "ConnectionTimeout",
        "DisconnectionError",
    }
)


def _from_driver(exc: BaseException) -> bool:
    """Whether a plain exception (OSError, TimeoutError) was raised inside driver code: an
    LLM call timing out is not a database outage."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    found: list[BaseException] = []
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return found


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database did not answer in time or dropped the connection."""
    for current in _chain(exc):
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate:
            # The server answered with a code: only its class decides.
            if sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
                return True
            continue
        if getattr(current, "orig", None) is not None:
            continue  # a SQLAlchemy wrapper: the driver's own error (in the chain) decides
        module = type(current).__module__
        if module.startswith(_DRIVER_MODULES):
            if type(current).__name__ in _UNAVAILABLE_DRIVER_ERRORS:
                return True
        elif isinstance(current, (TimeoutError, OSError)) and _from_driver(current):
            return True
    return False
