"""Tokenize requests of one loop turn go to the runner as one, and come back each its own."""

from __future__ import annotations

import asyncio

import pytest

from emberd.backends.base import BackendError
from emberd.backends.gathering import TokenizeGathering
from tests.support.bounded import bounded


class Runner:
    """Tokenizes as a runner would (a text's ids are its characters' codes), counting sends;
    a text "bad" fails alone, and `fail` fails a whole send."""

    def __init__(self) -> None:
        self.sends: list[list[str]] = []
        self.fail: Exception | None = None

    async def send(self, texts: list[str]) -> list[list[int] | BackendError]:
        self.sends.append(texts)
        await asyncio.sleep(0.01)
        if self.fail is not None:
            raise self.fail
        return [BackendError(f"cannot tokenize {t!r}") if t == "bad" else list(map(ord, t))
                for t in texts]  # fmt: skip


@bounded
async def test_the_requests_of_one_turn_share_one_send() -> None:
    runner = Runner()
    gathering = TokenizeGathering(runner.send)
    answers = await asyncio.gather(
        gathering.tokenize(["ab"]), gathering.tokenize([]), gathering.tokenize(["c", "de"])
    )
    assert answers == [[[97, 98]], [], [[99], [100, 101]]]
    assert runner.sends == [["ab", "c", "de"]]
    assert await gathering.tokenize(["f"]) == [[102]]  # a later turn: a send of its own
    assert len(runner.sends) == 2


@bounded
async def test_a_text_that_fails_fails_its_own_request_only() -> None:
    gathering = TokenizeGathering(Runner().send)
    good, bad = await asyncio.gather(
        gathering.tokenize(["ok"]), gathering.tokenize(["fine", "bad"]), return_exceptions=True
    )
    assert good == [[111, 107]]
    assert isinstance(bad, BackendError) and "'bad'" in str(bad)


@bounded
async def test_a_failed_send_fails_every_request_in_it() -> None:
    runner = Runner()
    runner.fail = BackendError("the runner stopped")
    gathering = TokenizeGathering(runner.send)
    answers = await asyncio.gather(
        gathering.tokenize(["a"]), gathering.tokenize(["b"]), return_exceptions=True
    )
    assert [str(a) for a in answers] == ["the runner stopped"] * 2


@bounded
async def test_a_request_whose_client_left_does_not_hold_up_the_others() -> None:
    gathering = TokenizeGathering(Runner().send)
    leaving = asyncio.ensure_future(gathering.tokenize(["gone"]))
    staying = asyncio.ensure_future(gathering.tokenize(["here"]))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == [[104, 101, 114, 101]]
    with pytest.raises(asyncio.CancelledError):
        await leaving
