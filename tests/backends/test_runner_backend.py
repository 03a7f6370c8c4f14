"""The runner backend: a lone text in one exchange, when spares start, and when a silent
runner is ended."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from emberd.backends.base import InputRefused, LoadOptions, ModelCrashed
from emberd.backends.runner import RemoteModel, RunnerBackend
from tests.support.harness import ModelFiles
from tests.support.runners import DrivenModel, loaded_in_runner

pytestmark = pytest.mark.slow

OPTIONS = LoadOptions(
    num_ctx=64, num_batch=64, num_gpu=0, main_gpu=0, use_mmap=True, use_mlock=False, num_thread=1
)


@contextlib.contextmanager
def loaded_by(backend: RunnerBackend, path: Path) -> Iterator[DrivenModel]:
    """`path` loaded by `backend`, driven from this thread; the backend closed after."""
    try:
        loaded = backend.load(path, OPTIONS, None)
        assert isinstance(loaded, RemoteModel)
        model = DrivenModel(loaded, path)
        yield model
        model.close()
    finally:
        backend.close()


def test_a_decode_that_hangs_ends_its_runner_after_the_timeout(model_files: ModelFiles) -> None:
    with loaded_by(RunnerBackend(decode_timeout_s=1.0), model_files.mean) as model:
        assert model.embed([[1, 5, 2]]).shape == (1, model.model.facts.n_embd)
        os.kill(model.model.pid, signal.SIGSTOP)  # as a hung kernel would: alive, not answering
        started = time.monotonic()
        with pytest.raises(ModelCrashed, match="did not finish a decode within 1 s"):
            model.embed([[1, 5, 2]])
        assert time.monotonic() - started < 5
        assert not model.model.alive()


def seconds_until_spare(backend: RunnerBackend, since: float) -> float:
    """Seconds from `since` until `backend` has a spare runner; fails after 10 s."""
    while not backend.has_spare:
        assert time.monotonic() - since < 10, "no spare runner was started"
        time.sleep(0.05)
    return time.monotonic() - since


def test_the_next_spare_starts_after_the_new_models_first_moments(model_files: ModelFiles) -> None:
    backend = RunnerBackend(spare_delay_s=1.0)
    try:
        model = backend.load(model_files.mean, OPTIONS, None)
        loaded = time.monotonic()
        # A spare starting now would take a core from the model's first requests.
        assert not backend.has_spare
        assert seconds_until_spare(backend, loaded) >= 0.9
        model.close()
    finally:
        backend.close()
    assert not backend.has_spare


def test_a_lone_text_in_one_exchange_matches_tokenize_then_decode(model_files: ModelFiles) -> None:
    with loaded_in_runner(model_files.mean, OPTIONS) as driven:
        model = driven.model
        facts = model.facts
        text = "why is the sky blue"
        sequence = [*facts.prefix, *driven.tokenize(text), *facts.suffix]
        vector, tokens = driven.run(model.embed_text(text, limit=62, truncate=True))
        assert tokens == len(sequence)
        np.testing.assert_allclose(vector, driven.embed([sequence]), rtol=1e-5, atol=1e-6)
        # Cut to the limit before the special tokens, as the queue's path cuts.
        _, cut = driven.run(model.embed_text(text, limit=2, truncate=True))
        assert cut == 2 + len(facts.prefix) + len(facts.suffix)
        with pytest.raises(InputRefused, match="exceeds the context length"):
            driven.run(model.embed_text(text, limit=2, truncate=False))
        assert model.alive()  # a refused input is the client's error, not the runner's


def test_requests_tokenized_together_each_get_their_own_tokens(model_files: ModelFiles) -> None:
    texts = [["why is the sky blue"], ["a", "bb", "ccc"], [], ["the grass is green"] * 2]
    with loaded_in_runner(model_files.mean, OPTIONS) as driven:
        alone = [[driven.tokenize(text) for text in group] for group in texts]

        async def together() -> list[list[list[int]]]:
            return list(await asyncio.gather(*(driven.model.tokenize(g) for g in texts)))

        assert driven.run(together()) == alone
        assert all(alone[1]) and alone[1][0] != alone[1][1]  # real, distinct token lists


def test_the_next_spare_waits_for_requests_to_pause(model_files: ModelFiles) -> None:
    backend = RunnerBackend(spare_delay_s=0.5)
    with loaded_by(backend, model_files.mean) as model:
        busy_until = time.monotonic() + 1.5
        while time.monotonic() < busy_until:  # a steady stream: no pause of 0.5 s
            model.embed([[1, 5, 2]])
            assert not backend.has_spare
            time.sleep(0.05)
        assert seconds_until_spare(backend, time.monotonic()) >= 0.4
