"""Pure rules of account deletion: backoff, running totals, keyed hashes."""

from __future__ import annotations

import uuid

from runtime.erasure import add_counts
from services.auth.deletions import PSEUDONYM_PREFIX, UserKeys, retry_delay_s


def test_retry_delay_doubles_with_jitter_up_to_the_maximum() -> None:
    for attempts, ceiling in ((0, 1.0), (1, 2.0), (3, 8.0), (10, 60.0), (1000, 60.0)):
        delays = [retry_delay_s(attempts, 60.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempts, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered: replicas retrying together spread out


def test_a_retried_erasure_adds_to_the_earlier_counts() -> None:
    assert add_counts(None, {"sessions": 2}) == {"sessions": 2}
    assert add_counts({"sessions": 2, "conversation_clears": 1}, {"sessions": 0, "conversation_clears": 0}) == {
        "sessions": 2,
        "conversation_clears": 1,
    }
    assert add_counts({"sessions": 2}, {"sessions": 1, "runs": 3}) == {"sessions": 3, "runs": 3}


def test_user_keys_are_keyed_stable_and_do_not_contain_the_id() -> None:
    user_id = str(uuid.uuid4())
    keys, other_secret = UserKeys("secret-one"), UserKeys("secret-two")
    assert keys.key(user_id) == keys.key(user_id)
    assert keys.key(user_id) != other_secret.key(user_id)
    assert keys.key(user_id) != keys.key(str(uuid.uuid4()))
    pseudonym = keys.pseudonym(user_id)
    assert pseudonym.startswith(PSEUDONYM_PREFIX) and user_id not in pseudonym
    assert user_id.replace("-", "") not in keys.key(user_id).hex()
