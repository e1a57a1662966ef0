"""Background work waits, a bounded time, for turns before their first token."""

from __future__ import annotations

import asyncio

from services.agent.foreground import Foreground


async def test_nothing_waits_when_no_turn_is_before_its_first_token() -> None:
    assert await Foreground().quiet(5.0) == 0.0


async def test_background_goes_on_when_the_last_waiting_turn_has_its_first_token() -> None:
    foreground = Foreground()
    first, second = foreground.enter(), foreground.enter()
    quiet = asyncio.create_task(foreground.quiet(5.0))
    await asyncio.sleep(0.05)
    first.release()
    first.release()  # a second release changes nothing
    await asyncio.sleep(0.05)
    assert not quiet.done() and foreground.waiting == 1

    second.release()
    waited = await asyncio.wait_for(quiet, 1.0)

    assert 0.05 <= waited < 5.0
    assert foreground.waiting == 0


async def test_background_waits_no_longer_than_its_bound() -> None:
    foreground = Foreground()
    foreground.enter()  # a turn that never gets its token

    waited = await asyncio.wait_for(foreground.quiet(0.1), 1.0)

    assert waited >= 0.09  # the loop may wake a clock tick early
    assert foreground.waiting == 1
