"""Bounded thread pools, one per kind of blocking work, so slow work of one kind never
starves another.

Everything that blocks (the disk, the network, hashing) runs off the event
loop in a thread. Sharing one pool would let a few slow jobs of one kind (a
pull from a registry that drips, a listing that waits for a multi-GB file's
hash) take every thread, and then requests that need a thread only for a
moment (an embed resolving its model's name) wait behind them. Each kind
gets its own pool; a full pool queues only its own kind.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")


class WorkPool:
    """A bounded pool of threads named for its kind of work, awaited from the event loop."""

    def __init__(self, kind: str, workers: int) -> None:
        self.kind = kind
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"emberd-{kind}")

    async def run(self, work: Callable[..., _T], *args: object) -> _T:
        """`work(*args)` in one of the pool's threads.

        Cancelling the await drops the work if it has not started; work that
        has started runs on (give it a cancel switch to stop it).
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(work, *args))

    def close(self) -> None:
        """Drop the queued work and let the threads end once their work is done."""
        self._executor.shutdown(wait=False, cancel_futures=True)
