"""How the engine turns texts into token sequences: truncation and empty inputs."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from emberd.backends.base import LoadOptions
from emberd.server.core.engine import prepare_texts
from emberd.server.core.errors import InvalidRequest
from tests.support.standin_backend import StandInModel

OPTIONS = LoadOptions(
    num_ctx=64, num_batch=64, num_gpu=0, main_gpu=0, use_mmap=False, use_mlock=False, num_thread=1
)


def model(prefix: tuple[int, ...] = (1,), suffix: tuple[int, ...] = (2,)) -> StandInModel:
    standin = StandInModel(Path("/models/m.gguf"), OPTIONS)
    standin.facts = dataclasses.replace(standin.facts, prefix=prefix, suffix=suffix)
    return standin


def test_an_empty_text_is_its_special_tokens() -> None:
    assert asyncio.run(prepare_texts(model(), ["", "a b"], limit=8, truncate=True)) == [
        [1, 2],
        [1, 11, 11, 2],
    ]


def test_an_empty_text_on_a_model_without_special_tokens_is_a_400_naming_it() -> None:
    bare = model(prefix=(), suffix=())
    assert asyncio.run(prepare_texts(bare, ["a"], limit=8, truncate=True)) == [[11]]
    with pytest.raises(InvalidRequest, match=r"^input 1 has no tokens to embed"):
        asyncio.run(prepare_texts(bare, ["sky", "", "sea"], limit=8, truncate=True))


def test_truncation_keeps_the_first_tokens_then_adds_the_specials() -> None:
    assert asyncio.run(prepare_texts(model(), ["a bb ccc dddd"], limit=2, truncate=True)) == [
        [1, 11, 12, 2]
    ]
    with pytest.raises(InvalidRequest, match="exceeds the context length"):
        asyncio.run(prepare_texts(model(), ["a bb ccc"], limit=2, truncate=False))
