"""A model file, however broken, costs only a clear error for requests to it.

Header values that llama.cpp asserts on are refused before it sees the file;
anything the checks miss is caught by trying a file's first load in a child
process. The HTTP cases run against a server in a child process, so that a
regression shows as a dead server instead of a dead test run.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from emberd.backends import probe as probe_module
from emberd.backends.base import LoadOptions, ModelLoadError
from emberd.backends.llama_cpp import LlamaCppBackend
from emberd.backends.probe import LoadProbe
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


def test_a_crash_inside_llama_cpp_stays_in_the_probe(
    good_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past the header checks (called here without them), this file aborts
    # llama.cpp while it loads: only the child process may die of it.
    crasher = patched_copy(good_file, tmp_path / "crash.gguf", {"bert.block_count": 1000})
    probe = LoadProbe(tmp_path / "verdicts")
    with pytest.raises(ModelLoadError, match=r"llama.cpp crashed loading this model \(SIG"):
        probe.vet(crasher, "crasher")
    # The verdict is kept: asking again starts no child.
    calls: list[Path] = []
    monkeypatch.setattr(probe_module, "run_probe", lambda path: calls.append(path))
    with pytest.raises(ModelLoadError, match="crashed"):
        probe.vet(crasher, "crasher")
    assert calls == []
    assert not (tmp_path / "verdicts" / "crasher").exists()  # bad verdicts are not kept


def test_a_good_verdict_is_kept_on_disk(
    good_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    LoadProbe(tmp_path / "verdicts").vet(good_file, "good-digest")
    assert (tmp_path / "verdicts" / "good-digest").is_file()

    def must_not_run(path: Path) -> str:
        raise AssertionError("a known-good file was tried again")

    monkeypatch.setattr(probe_module, "run_probe", must_not_run)
    LoadProbe(tmp_path / "verdicts").vet(good_file, "good-digest")  # a new server, same store


def test_a_probe_failure_llama_cpp_reports_is_passed_on(tmp_path: Path) -> None:
    truncated = tmp_path / "half.gguf"
    data = write_tiny_bert(tmp_path / "whole.gguf").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as failed:
        LoadProbe(None).vet(truncated, "half")
    assert "crashed" not in str(failed.value)


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


def test_the_runtime_vets_each_file_before_loading_it(good_file: Path, tmp_path: Path) -> None:
    crasher = patched_copy(good_file, tmp_path / "crash.gguf", {"bert.block_count": 1000})
    options = LoadOptions(
        num_ctx=64,
        num_batch=64,
        num_gpu=0,
        main_gpu=0,
        use_mmap=False,
        use_mlock=False,
        num_thread=1,
    )
    runtime = Runtime(
        LlamaCppBackend(), runtime_limits(Settings()), vet=LoadProbe(tmp_path / "verdicts").vet
    )

    async def scenario() -> None:
        with pytest.raises(ModelLoadError, match="crashed"):
            async with runtime.use(_record(crasher, "crash"), options, 0):
                pass
        async with runtime.use(_record(good_file, "good"), options, 0) as lease:
            vectors = await lease.queue.embed(
                [[*lease.model.facts.prefix, 5, 6, *lease.model.facts.suffix]]
            )
            assert np.isfinite(vectors).all()
        await runtime.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
