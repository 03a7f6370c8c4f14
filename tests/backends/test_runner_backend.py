"""The runner backend's own timing: when spares start, and when a silent runner is ended."""

from __future__ import annotations

import os
import signal
import time

import pytest

from emberd.backends.base import LoadOptions, ModelCrashed
from emberd.backends.runner import RemoteModel, RunnerBackend
from tests.support.harness import ModelFiles

pytestmark = pytest.mark.slow

OPTIONS = LoadOptions(
    num_ctx=64, num_batch=64, num_gpu=0, main_gpu=0, use_mmap=True, use_mlock=False, num_thread=1
)


def test_a_decode_that_hangs_ends_its_runner_after_the_timeout(model_files: ModelFiles) -> None:
    backend = RunnerBackend(decode_timeout_s=1.0)
    try:
        model = backend.load(model_files.mean, OPTIONS, None)
        assert isinstance(model, RemoteModel)
        assert model.embed([[1, 5, 2]]).shape == (1, model.facts.n_embd)
        os.kill(model.pid, signal.SIGSTOP)  # as a hung kernel would: alive, never answering
        started = time.monotonic()
        with pytest.raises(ModelCrashed, match="did not finish a decode within 1 s"):
            model.embed([[1, 5, 2]])
        assert time.monotonic() - started < 5
        assert not model.alive()
        model.close()
    finally:
        backend.close()


def test_the_next_spare_starts_after_the_new_models_first_moments(model_files: ModelFiles) -> None:
    backend = RunnerBackend(spare_delay_s=1.0)
    try:
        model = backend.load(model_files.mean, OPTIONS, None)
        loaded = time.monotonic()
        # A spare starting now would take a core from the model's first requests.
        assert not backend.has_spare
        while not backend.has_spare:
            assert time.monotonic() - loaded < 10, "no spare runner was started"
            time.sleep(0.05)
        assert time.monotonic() - loaded >= 0.9
        model.close()
    finally:
        backend.close()
    assert not backend.has_spare
