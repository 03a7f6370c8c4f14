"""Tokenize requests made in one turn of the event loop, sent to a runner as one.

Thirty-two clients that each send a text arrive together, and their
requests reach the model in the same turn of the loop. One exchange with
the runner for all of them costs its tokenize thread one wake-up instead of
thirty-two, and the server one frame. Each request still gets its own
token lists, or its own error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from emberd.backends.base import BackendError

TokenLists = list[list[int]]
# Token ids, or the error of that one text, for each text sent.
Tokenizer = Callable[[list[str]], Awaitable[list[list[int] | BackendError]]]


class TokenizeGathering:
    """Gathers the `tokenize` calls of one loop turn into one call of `send`."""

    def __init__(self, send: Tokenizer) -> None:
        self._send = send
        self._texts: list[str] = []
        self._waiting: list[tuple[int, asyncio.Future[TokenLists]]] = []
        self._sending: set[asyncio.Task[None]] = set()  # held: the loop keeps weak references

    async def tokenize(self, texts: Sequence[str]) -> TokenLists:
        """Token ids of each of `texts`; the first failed text's error is raised."""
        loop = asyncio.get_running_loop()
        if not self._waiting:
            # Its first step runs in the next turn: this turn's requests have joined by then.
            task = loop.create_task(self._send_gathered())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        future: asyncio.Future[TokenLists] = loop.create_future()
        self._waiting.append((len(texts), future))
        self._texts.extend(texts)
        return await future

    async def _send_gathered(self) -> None:
        texts, waiting = self._texts, self._waiting
        self._texts, self._waiting = [], []
        try:
            results = await self._send(texts)
        except asyncio.CancelledError:
            for _, future in waiting:
                future.cancel()
            raise
        except Exception as exc:  # the runner's end, or a broken answer: everyone's
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for count, future in waiting:
            mine = results[start : start + count]
            start += count
            if future.done():  # its caller went away
                continue
            failed = next((r for r in mine if isinstance(r, BackendError)), None)
            if failed is not None:
                future.set_exception(failed)
            else:
                future.set_result(cast(TokenLists, mine))  # no errors among them
