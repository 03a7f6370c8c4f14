"""A model file, however broken, costs only a clear error for requests to it.

Header values that llama.cpp asserts on are refused by the runner before
llama.cpp sees the file; anything the checks miss ends only that runner (see
test_isolation.py). The HTTP cases run against a server in a child process,
so that a regression shows as a dead server instead of a dead test run.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from emberd.backends.base import LoadOptions, ModelCrashed, ModelLoadError
from emberd.backends.runner import RunnerBackend
from emberd.models.errors import InvalidModelFile
from emberd.models.gguf_checks import check_loadable
from emberd.models.gguf_meta import read_gguf_info
from emberd.models.names import ModelName
from emberd.models.store import EMBERD, ModelRecord
from emberd.server.assembly import runtime_limits
from emberd.server.config import Settings
from emberd.server.core.runtime import Runtime
from tests.support.gguf_patch import patched_copy
from tests.support.subprocess_server import child_server_in
from tests.support.tiny_model import write_tiny_bert

pytestmark = pytest.mark.slow  # starts child processes

OPTIONS = LoadOptions(
    num_ctx=64, num_batch=64, num_gpu=0, main_gpu=0, use_mmap=False, use_mlock=False, num_thread=1
)
BROKEN: dict[str, dict[str, float | int | bool]] = {
    "no-layers": {"bert.block_count": 0},
    "too-many-layers": {"bert.block_count": 1000},
    "nan-epsilon": {"bert.attention.layer_norm_epsilon": math.nan},
    "unknown-pooling": {"bert.pooling_type": 99},
    "no-heads": {"bert.attention.head_count": 0},
}


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("good") / "tiny.gguf")


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_the_header_checks_refuse_what_llama_cpp_asserts_on(
    good_file: Path, tmp_path: Path, name: str
) -> None:
    broken = patched_copy(good_file, tmp_path / f"{name}.gguf", BROKEN[name])
    with pytest.raises(InvalidModelFile) as refused:
        check_loadable(read_gguf_info(broken))
    assert refused.value.reason.startswith("unsupported model file: ")
    check_loadable(read_gguf_info(good_file))  # and a good file passes


def test_broken_files_get_clear_errors_and_other_models_keep_working(
    good_file: Path, tmp_path: Path
) -> None:
    store = tmp_path / "emberd"
    patched = {
        name: patched_copy(good_file, store / f"{name}.gguf", values)
        for name, values in BROKEN.items()
    }
    (store / "garbage.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    (store / "tiny.gguf").write_bytes(good_file.read_bytes())
    with child_server_in(tmp_path) as child:
        for name in [*patched, "garbage"]:
            for path, body in (
                ("/api/embed", {"model": name, "input": "sky"}),
                ("/v1/embeddings", {"model": name, "input": "sky"}),
            ):
                response = child.client.post(path, json=body)
                assert response.status_code == 500, response.text
                message = response.json()["error"]
                message = message["message"] if isinstance(message, dict) else message
                assert message.startswith(f'failed to load model "{name}": '), message
                assert str(tmp_path) not in message  # the path goes to the log only
            assert child.alive(), child.log()
        assert str(store) in child.log()
        ok = child.client.post("/api/embed", json={"model": "tiny", "input": "sky"})
        assert ok.status_code == 200, ok.text
        tags = child.client.get("/api/tags")
        assert tags.status_code == 200
        assert "tiny:latest" in [m["name"] for m in tags.json()["models"]]


def test_a_file_llama_cpp_cannot_read_is_a_load_error_not_a_crash(tmp_path: Path) -> None:
    truncated = tmp_path / "half.gguf"
    data = write_tiny_bert(tmp_path / "whole.gguf").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    backend = RunnerBackend()
    try:
        with pytest.raises(ModelLoadError) as failed:
            backend.load(truncated, OPTIONS, None)
        assert not isinstance(failed.value, ModelCrashed)
    finally:
        backend.close()


def _record(path: Path, name: str) -> ModelRecord:
    return ModelRecord(
        name=ModelName.parse(name),
        path=path,
        digest=name * 4,
        size=path.stat().st_size,
        modified_at=datetime.now(timezone.utc),
        params={},
        source=EMBERD,
    )


def test_the_runner_checks_each_file_before_llama_cpp_reads_it(
    good_file: Path, tmp_path: Path
) -> None:
    crasher = patched_copy(good_file, tmp_path / "crash.gguf", {"bert.block_count": 1000})
    runtime = Runtime(RunnerBackend(), runtime_limits(Settings()))

    async def scenario() -> None:
        with pytest.raises(ModelLoadError, match=r"^unsupported model file: bert\.block_count"):
            async with runtime.use(_record(crasher, "crash"), OPTIONS, 0):
                pass
        async with runtime.use(_record(good_file, "good"), OPTIONS, 0) as lease:
            vectors = await lease.queue.embed(
                [[*lease.model.facts.prefix, 5, 6, *lease.model.facts.suffix]]
            )
            assert np.isfinite(vectors).all()
        await runtime.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
