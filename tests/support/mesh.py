"""Settings every test mesh (and every extra process a test starts from it) runs with."""

from __future__ import annotations

# Test-only speedups and limits: bcrypt at cost 4 (production requires >= 12) so a
# hundred registrations take milliseconds, and gateway rate limits high enough that
# only the rate-limit tests hit them.
TEST_ENV = {
    "APP_ENV": "test",
    "BCRYPT_ROUNDS": "4",
    "LOG_LEVEL": "INFO",
    "SHUTDOWN_GRACE_S": "10",
    # Every test client shares 127.0.0.1; tests of the limits start their own gateway.
    **{
        f"RATE_LIMIT_{route_class}": "100000 per minute"
        for route_class in ("DEFAULT", "READ", "CHAT", "CHAT_STREAM", "MESSAGES", "LOGIN", "REGISTER")
    },
}
