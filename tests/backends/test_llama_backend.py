"""The llama.cpp backend on real tiny BERT GGUFs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp as lc
import numpy as np
import pytest

from emberd.backends.base import BackendError, LoadOptions, ModelLoadError, Pooling
from emberd.backends.devices import MAX_SEQUENCES, safe_batch_size
from emberd.backends.llama_cpp import LlamaCppBackend, LlamaCppModel
from tests.support.tiny_model import tiny_token_id, write_tiny_bert

OPTIONS = LoadOptions(
    num_ctx=4096,
    num_batch=2048,
    num_gpu=0,
    main_gpu=0,
    use_mmap=True,
    use_mlock=False,
    num_thread=1,
)
CLS, SEP = tiny_token_id("[CLS]"), tiny_token_id("[SEP]")
TEXTS = ("why is the sky blue?", "hello world", "green grass and red fire", "a")


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for this module's GGUF files."""
    return tmp_path_factory.mktemp("llama_backend")


def load(path: Path, **changes: Any) -> LlamaCppModel:
    """Load `path` with OPTIONS, some of them changed."""
    return LlamaCppBackend().load(path, dataclasses.replace(OPTIONS, **changes))


@pytest.fixture(scope="module")
def mean_model(gguf_dir: Path) -> Iterator[LlamaCppModel]:
    """The tiny BERT (context 128, 32 dimensions), mean pooled."""
    model = load(write_tiny_bert(gguf_dir / "mean.gguf", pooling=1, seed=0))
    yield model
    model.close()


def with_specials(model: LlamaCppModel, text: str) -> list[int]:
    """The token ids of `text` between the model's special tokens."""
    return [*model.facts.prefix, *model.tokenize(text), *model.facts.suffix]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# -- facts and tokens --------------------------------------------------------------


def test_facts(mean_model: LlamaCppModel) -> None:
    facts = mean_model.facts
    assert (facts.n_embd, facts.n_ctx_train, facts.n_layers) == (32, 128, 2)
    assert facts.pooling == Pooling.MEAN
    assert facts.prefix == (CLS,) and facts.suffix == (SEP,)
    assert facts.gpu_layers == 0  # num_gpu 0
    assert mean_model.max_batch_tokens() == 128


def test_tokenize_adds_no_special_tokens(mean_model: LlamaCppModel) -> None:
    expected = [tiny_token_id(p) for p in ("why", "is", "the", "sky", "blue", "?")]
    assert mean_model.tokenize("why is the sky blue?") == expected
    assert mean_model.tokenize("") == []


# -- embedding ------------------------------------------------------------------------


def test_one_decode_of_many_equals_many_single_decodes(mean_model: LlamaCppModel) -> None:
    sequences = [with_specials(mean_model, t) for t in TEXTS]
    before = mean_model.stats.decodes
    together = mean_model.embed(sequences)
    assert mean_model.stats.decodes == before + 1
    apart = np.concatenate([mean_model.embed([s]) for s in sequences])
    assert together.shape == (len(TEXTS), 32) and together.dtype == np.float32
    assert cosine(together, apart).min() > 0.9999
    assert cosine(together[:1], together[1:2])[0] < 0.999  # different texts differ


def test_batches_that_do_not_fit_are_refused(mean_model: LlamaCppModel) -> None:
    before = mean_model.stats.decodes
    with pytest.raises(BackendError, match="exceeds"):
        mean_model.embed([[CLS] + [5] * 60 + [SEP]] * 3)  # 186 tokens > 128
    with pytest.raises(BackendError, match="exceeds"):
        mean_model.embed([[5]] * (mean_model.max_batch_sequences() + 1))
    with pytest.raises(BackendError, match="empty"):
        mean_model.embed([[CLS, SEP], []])
    assert mean_model.stats.decodes == before
    assert mean_model.embed([]).shape == (0, 32)


def test_cls_and_mean_pooling_differ(gguf_dir: Path, mean_model: LlamaCppModel) -> None:
    cls_model = load(write_tiny_bert(gguf_dir / "cls.gguf", pooling=2, seed=0))
    try:
        assert cls_model.facts.pooling == Pooling.CLS
        sequences = [with_specials(mean_model, t) for t in TEXTS]
        assert cosine(cls_model.embed(sequences), mean_model.embed(sequences)).max() < 0.99
    finally:
        cls_model.close()


def test_a_model_without_pooling_is_pooled_by_mean(gguf_dir: Path) -> None:
    none = load(write_tiny_bert(gguf_dir / "none.gguf", pooling=0, seed=3))
    mean = load(write_tiny_bert(gguf_dir / "mean3.gguf", pooling=1, seed=3))
    try:
        assert none.facts.pooling == Pooling.MEAN
        sequences = [with_specials(mean, t) for t in TEXTS]
        np.testing.assert_array_equal(none.embed(sequences), mean.embed(sequences))
    finally:
        none.close()
        mean.close()


# -- context sizes ----------------------------------------------------------------------


def test_safe_batch_size() -> None:
    assert [safe_batch_size(n) for n in (0, 1, 100, 256)] == [1, 1, 100, 256]
    assert [safe_batch_size(n) for n in (257, 300, 512, 640, 1000)] == [512, 512, 512, 768, 1024]
    for n in range(1, 3000, 7):
        size = safe_batch_size(n)
        assert size >= n and (size <= MAX_SEQUENCES or size % MAX_SEQUENCES == 0)


# Risky llama.cpp calls (a mistake is a C abort) run in a process of their own.
_PROBE = """
import sys
from pathlib import Path
from typing import Any
from emberd.backends.base import BackendError, LoadOptions
from emberd.backends.llama_cpp import LlamaCppBackend

def load(path, num_ctx):
    return LlamaCppBackend().load(Path(path), LoadOptions(num_ctx, num_ctx, 0, 0, True, False, 1))

def embed_length(model, length):
    try:
        return model.embed([[2] + [5] * (length - 2) + [3]]).shape[0]
    except BackendError:
        return "refused"

ctx1024, ctx300 = sys.argv[1:]
for num_ctx in (300, 384, 640, 1000, 1024, 100):
    model = load(ctx1024, num_ctx)
    print(num_ctx, model.max_batch_tokens(), model.max_batch_sequences(),
          embed_length(model, min(num_ctx, 1024)))
    model.close()
# llama.cpp needs a micro-batch of 512 for a context of 300, but positions stop at 300.
model = load(ctx300, 4096)
print(model.max_batch_tokens(), embed_length(model, 301), embed_length(model, 300))
"""


@pytest.fixture(scope="module")
def probe(gguf_dir: Path) -> list[str]:
    """The lines `_PROBE` printed, after checking that it exited cleanly."""
    ctx1024 = write_tiny_bert(gguf_dir / "ctx1024.gguf", context_length=1024)
    ctx300 = write_tiny_bert(gguf_dir / "ctx300.gguf", context_length=300)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PROBE), str(ctx1024), str(ctx300)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_contexts_for_awkward_num_ctx_are_created(probe: list[str]) -> None:
    assert probe[:6] == [
        "300 512 256 1",
        "384 512 256 1",
        "640 768 256 1",
        "1000 1024 256 1",
        "1024 1024 256 1",
        "100 100 100 1",
    ]


def test_no_sequence_longer_than_the_trained_context(probe: list[str]) -> None:
    assert probe[6] == "512 refused 1"


# -- lifecycle ------------------------------------------------------------------------


def test_close_twice_is_safe_and_a_closed_model_refuses_work(gguf_dir: Path) -> None:
    model = load(write_tiny_bert(gguf_dir / "closing.gguf"))
    model.close()
    model.close()
    with pytest.raises(BackendError):
        model.embed([[CLS, SEP]])
    with pytest.raises(BackendError):
        model.tokenize("hello")


def test_close_waits_for_a_running_decode(gguf_dir: Path) -> None:
    model = load(write_tiny_bert(gguf_dir / "racing.gguf"))
    outcome: list[BaseException] = []
    started = threading.Event()

    def decode_until_closed() -> None:
        sequence = [CLS] + [5] * 100 + [SEP]
        try:
            while True:
                model.embed([sequence])
                started.set()
        except BackendError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=decode_until_closed)
    worker.start()
    assert started.wait(5)
    model.close()
    worker.join(5)
    assert not worker.is_alive()
    assert len(outcome) == 1 and "closed" in str(outcome[0])


def test_garbage_and_truncated_files_raise_model_load_error(gguf_dir: Path) -> None:
    garbage = gguf_dir / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file " * 64)
    with pytest.raises(ModelLoadError):
        load(garbage)
    data = write_tiny_bert(gguf_dir / "whole.gguf").read_bytes()
    for cut in (30, 2000, len(data) // 2, len(data) - 100):
        truncated = gguf_dir / f"truncated-{cut}.gguf"
        truncated.write_bytes(data[:cut])
        with pytest.raises(ModelLoadError):
            load(truncated)
    with pytest.raises(ModelLoadError):
        load(gguf_dir / "missing.gguf")


@pytest.mark.parametrize(("threads", "lanes"), [(1, 1), (3, 2)])
def test_num_thread_is_honoured(gguf_dir: Path, threads: int, lanes: int) -> None:
    model = load(write_tiny_bert(gguf_dir / f"threads{threads}.gguf"), num_thread=threads)
    try:
        assert model.parallel_decodes() == lanes
        sky = with_specials(model, "why is the sky blue?")

        def lane_threads() -> list[tuple[int, int]]:
            contexts = [lane.ctx for lane in model._lanes]
            return [(lc.llama_n_threads(c), lc.llama_n_threads_batch(c)) for c in contexts]

        assert lane_threads() == [(threads, threads)] * lanes
        if lanes == 2:
            model.embed_parallel([[sky], [sky]])
            assert lane_threads() == [(2, 2), (1, 1)]  # shared out between two decodes
            model.embed([sky])
            assert lane_threads()[0] == (3, 3)  # a decode alone gets them all
    finally:
        model.close()


def test_parallel_decodes_match_single_ones_and_fail_alone(gguf_dir: Path) -> None:
    model = load(write_tiny_bert(gguf_dir / "parallel.gguf"), num_thread=2)
    try:
        first = [with_specials(model, t) for t in TEXTS[:2]]
        second = [with_specials(model, t) for t in TEXTS[2:]]
        together = model.embed_parallel([first, second])
        assert isinstance(together[0], np.ndarray) and isinstance(together[1], np.ndarray)
        assert cosine(together[0], model.embed(first)).min() > 0.9999
        assert cosine(together[1], model.embed(second)).min() > 0.9999
        bad = [[CLS, 10**6, SEP]]  # a token id outside the vocabulary
        failed, fine = model.embed_parallel([bad, first])
        assert isinstance(failed, BackendError)
        assert isinstance(fine, np.ndarray) and cosine(fine, together[0]).min() > 0.9999
        with pytest.raises(BackendError, match="lanes"):
            model.embed_parallel([first, first, first])
    finally:
        model.close()
