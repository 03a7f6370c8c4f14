"""A moment that moves, watched by one event-loop timer.

Several deadlines move with every request: a model's keep_alive, a
connection's header deadline, the moment a request's connection starts to
be listened to. A timer per request would be armed and cancelled thousands
of times a second. A `Deadline` keeps the timer it has while the moment
moves later; the timer, firing early, is set again for the moment as it is
then. Only a move to a sooner moment moves the timer.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

# uvloop's timers keep milliseconds: one may fire a little before its moment.
TIMER_SLACK_S = 0.001


class Deadline:
    """`on_due` called once the event loop's clock passes `when` (math.inf: never)."""

    def __init__(self) -> None:
        self.when = math.inf
        self._on_due: Callable[[], None] = _nothing
        self._timer: asyncio.TimerHandle | None = None

    def set(self, when: float, on_due: Callable[[], None]) -> None:
        """Have `on_due` called at `when` (the loop's clock) instead of any earlier setting."""
        self.when = when
        self._on_due = on_due
        if self._timer is not None:
            if self._timer.when() <= when:
                return  # it fires first, and looks again
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._fire)

    def clear(self) -> None:
        """No moment: a timer armed fires to no effect (cheaper than cancelling it)."""
        self.when = math.inf

    def cancel(self) -> None:
        """No moment, and no timer."""
        self.when = math.inf
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if self.when == math.inf:
            return
        loop = asyncio.get_running_loop()
        if loop.time() + TIMER_SLACK_S < self.when:  # the moment moved on
            self._timer = loop.call_at(self.when, self._fire)
            return
        self.when = math.inf
        self._on_due()


def _nothing() -> None:
    pass
