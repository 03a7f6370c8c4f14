"""The embedding core on its own: no HTTP server, no llama.cpp (a stand-in backend)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from emberd.models.store import ModelStores
from emberd.server.assembly import request_limits, runtime_limits
from emberd.server.config import Settings
from emberd.server.core.engine import EmbedJob, Engine, finish_vectors
from emberd.server.core.errors import InvalidRequest, InvalidVectors, LoadFailed
from emberd.server.core.options import ServerDefaults
from emberd.server.core.runtime import Runtime
from tests.support.bounded import bounded
from tests.support.gguf_files import write_gguf
from tests.support.standin_backend import StandInBackend, StandInModel, vector_of


def make_engine(tmp_path: Path, gpus: int = 0) -> tuple[Engine, StandInBackend]:
    store = tmp_path / "emberd"
    write_gguf(store / "m.gguf", context_length=64, extra={"bert.attention.head_count": 2})
    backend = StandInBackend(gpus=gpus)
    runtime = Runtime(backend, runtime_limits(Settings()))
    defaults = ServerDefaults(context_length=4096, num_thread=1)
    engine = Engine(ModelStores(store, None), runtime, defaults, request_limits(Settings()))
    return engine, backend


@bounded
async def test_vectors_are_in_input_order_and_normalised(tmp_path: Path) -> None:
    engine, _ = make_engine(tmp_path)
    result = await engine.embed(EmbedJob(model="m", texts=["a bb", "ccc", ""]))
    expected = np.stack([vector_of(s) for s in ([1, 11, 12, 2], [1, 13, 2], [1, 2])])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(result.vectors, expected, rtol=1e-6)
    assert result.prompt_tokens == 4 + 3 + 2
    await engine.runtime.close()


@bounded
async def test_dimensions_cut_then_normalise_and_raw_vectors_stay_raw(tmp_path: Path) -> None:
    engine, _ = make_engine(tmp_path)
    cut = await engine.embed(EmbedJob(model="m", texts=["a"], dimensions=3))
    assert cut.vectors.shape == (1, 3)
    assert np.linalg.norm(cut.vectors[0]) == pytest.approx(1.0)
    raw = await engine.embed(EmbedJob(model="m", texts=["a"], normalize=False))
    np.testing.assert_allclose(raw.vectors[0], vector_of([1, 11, 2]), rtol=1e-6)
    await engine.runtime.close()


@bounded
async def test_token_ids_outside_the_vocabulary_are_refused(tmp_path: Path) -> None:
    engine, _ = make_engine(tmp_path)
    with pytest.raises(InvalidRequest, match="token id 5000 is out of range"):
        await engine.embed(EmbedJob(model="m", token_lists=[[5, 5000]]))
    await engine.runtime.close()


@bounded
async def test_a_failed_load_names_the_model_not_the_path(tmp_path: Path) -> None:
    engine, backend = make_engine(tmp_path)
    backend.fail_loads = 1
    with pytest.raises(LoadFailed) as failed:
        await engine.embed(EmbedJob(model="m", texts=["a"]))
    assert failed.value.message == 'failed to load model "m": cannot load m.gguf'
    assert (await engine.embed(EmbedJob(model="m", texts=["a"]))).vectors.shape == (1, 8)
    await engine.runtime.close()


@bounded
async def test_no_model_name_is_refused_before_any_work(tmp_path: Path) -> None:
    engine, backend = make_engine(tmp_path)
    with pytest.raises(InvalidRequest, match="model is required"):
        await engine.embed(EmbedJob(model="", texts=["a"]))
    assert backend.load_calls == 0


async def nan_on_gpu_engine(tmp_path: Path) -> tuple[Engine, StandInBackend]:
    """An engine whose stand-in backend has one GPU, where every decode gives NaN."""
    engine, backend = make_engine(tmp_path, gpus=1)
    await engine.start()
    backend.nan_on_gpu = True
    return engine, backend


@bounded
async def test_nan_on_a_gpu_moves_the_model_to_the_cpu_and_retries_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine, backend = await nan_on_gpu_engine(tmp_path)
    result = await engine.embed(EmbedJob(model="m", texts=["a bb"]))
    expected = vector_of([1, 11, 12, 2])
    np.testing.assert_allclose(result.vectors[0], expected / np.linalg.norm(expected), rtol=1e-6)
    gpu, cpu = backend.models
    assert (gpu.options.num_gpu, cpu.options.num_gpu) == (-1, 0)
    assert gpu.closed and not cpu.closed  # the GPU runner was ended, not kept beside
    assert "restarting it on the CPU" in caplog.text
    # The file stays on the CPU: later requests, even asking for GPU layers, load nothing new.
    await engine.embed(EmbedJob(model="m", texts=["ccc"], options={"num_gpu": 99}))
    assert len(backend.models) == 2
    await engine.runtime.close()


@bounded
async def test_a_model_kept_off_the_gpu_gets_it_back_when_its_file_changes(tmp_path: Path) -> None:
    engine, backend = await nan_on_gpu_engine(tmp_path)
    await engine.embed(EmbedJob(model="m", texts=["a"]))
    backend.nan_on_gpu = False
    write_gguf(
        tmp_path / "emberd" / "m.gguf", context_length=64, extra={"bert.attention.head_count": 3}
    )
    await engine.embed(EmbedJob(model="m", texts=["a"]))
    assert [m.options.num_gpu for m in backend.models] == [-1, 0, -1]
    await engine.runtime.close()


@bounded
async def test_nan_on_the_cpu_after_the_retry_is_a_clear_error_not_a_loop(tmp_path: Path) -> None:
    engine, backend = await nan_on_gpu_engine(tmp_path)
    original = StandInModel.embed

    def nan_everywhere(self: StandInModel, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        out = original(self, sequences)
        return np.full_like(out, np.nan)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StandInModel, "embed", nan_everywhere)
        with pytest.raises(InvalidVectors):  # NaN on the CPU too: refused, no third try
            await engine.embed(EmbedJob(model="m", texts=["a"]))
    assert [m.options.num_gpu for m in backend.models] == [-1, 0]
    await engine.runtime.close()


# -- a lone text while the model is idle: tokenized and decoded in one step ---------


@bounded
async def test_a_lone_text_is_embedded_in_one_step_with_the_same_vector(tmp_path: Path) -> None:
    engine, backend = make_engine(tmp_path)
    lone = await engine.embed(EmbedJob(model="m", texts=["a bb"], normalize=False))
    (model,) = backend.models
    assert model.alone == ["a bb"] and model.batches == [[(1, 11, 12, 2)]]
    np.testing.assert_allclose(lone.vectors[0], vector_of([1, 11, 12, 2]), rtol=1e-6)
    assert lone.prompt_tokens == 4 and lone.token_counts == (4,)
    # Two texts go through the queue, tokenized first: the same vectors.
    both = await engine.embed(EmbedJob(model="m", texts=["a bb", "a bb"], normalize=False))
    assert model.alone == ["a bb"]
    np.testing.assert_allclose(both.vectors, np.stack([lone.vectors[0]] * 2), rtol=1e-6)
    await engine.runtime.close()


@bounded
async def test_a_lone_text_is_truncated_or_refused_as_in_the_queue(tmp_path: Path) -> None:
    engine, backend = make_engine(tmp_path)
    long = " ".join(["a"] * 100)  # over the model's context of 64 tokens
    cut = await engine.embed(EmbedJob(model="m", texts=[long]))
    assert cut.prompt_tokens == 64
    with pytest.raises(InvalidRequest, match=r"^the input length exceeds the context length$"):
        await engine.embed(EmbedJob(model="m", texts=[long], truncate=False))
    backend.models[0].facts = replace(backend.models[0].facts, prefix=(), suffix=())
    with pytest.raises(InvalidRequest, match="input 0 has no tokens to embed"):
        await engine.embed(EmbedJob(model="m", texts=[""]))
    assert backend.models[0].alone == [long, long, ""]
    await engine.runtime.close()


@bounded
async def test_a_lone_text_queues_while_the_model_is_busy(tmp_path: Path) -> None:
    engine, backend = make_engine(tmp_path)
    await engine.embed(EmbedJob(model="m", texts=["a"]))
    (model,) = backend.models
    model.decode_gate.close()
    model.decode_gate.entered.clear()
    first = asyncio.create_task(engine.embed(EmbedJob(model="m", texts=["bb"])))
    while not model.decode_gate.entered.is_set():
        await asyncio.sleep(0.005)
    second = asyncio.create_task(engine.embed(EmbedJob(model="m", texts=["ccc"])))
    while len(model.batches) < 3:  # the second has reached its own decode
        await asyncio.sleep(0.005)
    model.decode_gate.open()
    await asyncio.gather(first, second)
    assert model.alone == ["a", "bb"]  # the second waited its turn in the queue
    assert model.batches[-1] == [(1, 13, 2)]
    await engine.runtime.close()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    ("dimensions", "normalize"), [(None, True), (2, True), (None, False), (4, True)]
)
def test_vectors_with_nan_or_inf_anywhere_are_refused(
    bad: float, dimensions: int | None, normalize: bool
) -> None:
    vectors = np.array([[3.0, 4.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    assert np.allclose(finish_vectors(vectors, dimensions, True)[0, :2], [0.6, 0.8])
    vectors[1, 3] = bad  # past a cut to two dimensions as well
    with pytest.raises(InvalidVectors):
        finish_vectors(vectors, dimensions, normalize)
