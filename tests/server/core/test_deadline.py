"""A deadline that moves with every request keeps one timer and fires once, at its moment."""

from __future__ import annotations

import asyncio

from emberd.server.core.deadline import TIMER_SLACK_S, Deadline
from tests.support.bounded import bounded


async def fired_at(deadline: Deadline, *moves: float, wait: float = 0.3) -> list[float]:
    """Set `deadline` to each of `moves` (seconds from now) in turn; when it fired."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    fired: list[float] = []
    for move in moves:
        deadline.set(start + move, lambda: fired.append(loop.time() - start))
    await asyncio.sleep(wait)
    return fired


@bounded
async def test_a_later_moment_is_kept_to() -> None:
    (at,) = await fired_at(Deadline(), 0.05, 0.1, 0.15)
    assert at >= 0.15 - TIMER_SLACK_S


@bounded
async def test_a_sooner_moment_moves_the_timer() -> None:
    (at,) = await fired_at(Deadline(), 0.25, 0.03)
    assert 0.03 - TIMER_SLACK_S <= at < 0.2


@bounded
async def test_a_cleared_or_cancelled_deadline_never_fires() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    cleared, cancelled = Deadline(), Deadline()
    cleared.set(loop.time() + 0.02, lambda: fired.append("cleared"))
    cancelled.set(loop.time() + 0.02, lambda: fired.append("cancelled"))
    cleared.clear()
    cancelled.cancel()
    await asyncio.sleep(0.06)
    assert fired == []
