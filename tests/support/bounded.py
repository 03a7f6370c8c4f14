"""Async tests that cannot hang: each runs on a fresh event loop with a deadline."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

# Generous: a busy 2-core machine slows real decodes tenfold; this only stops hangs.
TEST_DEADLINE_S = 30.0


def bounded(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop, failing it after TEST_DEADLINE_S."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), TEST_DEADLINE_S))

    return wrapper
