"""llama.cpp runs in a runner process per model: whatever a file or an input makes it do
costs only that model's requests, and the server never maps llama.cpp at all.

The crashes are real: a GGUF whose SentencePiece vocabulary has no byte
tokens makes llama.cpp's tokenizer throw past its C API for any character
outside the vocabulary (an abort), and `kill -9` ends a runner as the
kernel's OOM killer would.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from emberd.backends.base import LoadOptions, ModelLoadError
from emberd.backends.runner import RunnerBackend
from emberd.models.store import file_version
from emberd.server.core.crashes import CRASH_LIMIT
from tests.support.gguf_patch import rewritten_copy
from tests.support.harness import (
    DEADLINE_S,
    SKY,
    TINY,
    ModelFiles,
    RecordingBackend,
    ServerFactory,
    in_background,
    make_stores,
    post_embed,
    wait_until,
)
from tests.support.registry_server import registry_server
from tests.support.subprocess_server import ChildServer, child_server_in
from tests.support.tiny_model import write_ollama_layout
from tests.support.tiny_reranker import write_xlmr_reranker, xlmr_weights

pytestmark = pytest.mark.slow  # starts child processes

SPM = "spm-no-bytes"
OPTIONS = LoadOptions(
    num_ctx=64, num_batch=64, num_gpu=0, main_gpu=0, use_mmap=False, use_mlock=False, num_thread=1
)


def error_of(response: httpx.Response) -> str:
    body = response.json()["error"]
    return str(body["message"] if isinstance(body, dict) else body)


@pytest.fixture
def crashing_home(tmp_path: Path, model_files: ModelFiles) -> Path:
    """Stores holding the tiny model, and (dropped and as if pulled) a file whose
    tokenizer aborts llama.cpp on any character outside its vocabulary."""
    store = tmp_path / "emberd"
    store.mkdir()
    (store / f"{TINY}.gguf").write_bytes(model_files.mean.read_bytes())
    # The tiny vocabulary, read as SentencePiece: no <0xXX> byte tokens to fall back on.
    rewritten_copy(model_files.mean, store / f"{SPM}.gguf", {"tokenizer.ggml.model": "llama"})
    write_ollama_layout(tmp_path / "ollama", store / f"{SPM}.gguf", name="spm-pulled")
    return tmp_path


def crash_and_recover(child: ChildServer, model: str) -> None:
    crashed = child.client.post("/api/embed", json={"model": model, "input": "Zebra"})
    assert crashed.status_code == 500, crashed.text
    message = error_of(crashed)
    assert message == f'model "{model}" stopped unexpectedly: aborted (SIGABRT)', message
    assert "/" not in message  # no path
    assert child.alive(), child.log()
    ok = child.client.post("/api/embed", json={"model": TINY, "input": SKY})
    assert ok.status_code == 200, ok.text
    again = child.client.post("/api/embed", json={"model": model, "input": SKY})
    assert again.status_code == 200, again.text  # a fresh runner serves what it can


def test_an_input_that_aborts_llama_cpp_costs_only_that_request(crashing_home: Path) -> None:
    with child_server_in(crashing_home) as child:
        crash_and_recover(child, SPM)
        crash_and_recover(child, "spm-pulled")
        openai = child.client.post("/v1/embeddings", json={"model": SPM, "input": "Zebra"})
        assert openai.status_code == 500
        assert error_of(openai).startswith(f'model "{SPM}" stopped unexpectedly')
    with child_server_in(crashing_home) as child:  # after a restart, the same
        crash_and_recover(child, SPM)


def test_the_same_file_pulled_from_a_registry_costs_only_its_requests(
    crashing_home: Path,
) -> None:
    with registry_server() as registry:
        registry.state.publish(
            "library/spm-reg", "latest", (crashing_home / "emberd" / f"{SPM}.gguf").read_bytes()
        )
        with child_server_in(crashing_home, "--registry", registry.url) as child:
            pulled = child.client.post("/api/pull", json={"model": "spm-reg", "stream": False})
            assert pulled.status_code == 200, pulled.text
            crash_and_recover(child, "spm-reg")


def test_the_server_process_never_maps_llama_cpp(tmp_path: Path, model_files: ModelFiles) -> None:
    store = tmp_path / "emberd"
    store.mkdir()
    (store / f"{TINY}.gguf").write_bytes(model_files.mean.read_bytes())
    write_xlmr_reranker(store / "reranker.gguf", xlmr_weights(seed=7))
    with child_server_in(tmp_path) as child:
        assert child.client.post("/api/embed", json={"model": TINY, "input": SKY}).is_success
        ranked = child.client.post(
            "/api/rerank", json={"model": "reranker", "query": "sky", "documents": ["a", "b"]}
        )
        assert ranked.is_success, ranked.text
        maps = Path(f"/proc/{child.process.pid}/maps").read_text()
        assert "libllama" not in maps and "libggml" not in maps
        runners = _children(child.process.pid)
        assert len(runners) >= 2  # the two models' runners (and a spare)
        assert any("libllama" in Path(f"/proc/{pid}/maps").read_text() for pid in runners)
        # An abort ends a runner at once, without ggml's debugger backtrace.
        for pid in runners:
            assert b"GGML_NO_BACKTRACE=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_kill_9_fails_the_requests_in_flight_and_the_next_get_a_fresh_runner(
    serve: ServerFactory, tmp_path: Path, model_files: ModelFiles
) -> None:
    stores = make_stores(tmp_path, model_files)
    backend = RecordingBackend(hold_decodes=True)
    live = serve(backend=backend, model_stores=stores)
    # A lone text in the runner, a decode of the queue behind it and a request queued
    # behind that: all in flight when the runner dies.
    in_flight = [in_background(post_embed(live, {"model": TINY, "input": SKY}))]
    assert backend.decoding.wait(DEADLINE_S)
    in_flight.append(in_background(post_embed(live, {"model": TINY, "input": "sky"})))
    wait_until(lambda: backend.models[0].held == 2)  # in its decode, so the next one queues
    in_flight.append(in_background(post_embed(live, {"model": TINY, "input": "sea"})))
    wait_until(lambda: live.queued == 1)
    os.kill(backend.models[0].pid, signal.SIGKILL)
    backend.release()
    for answer in (result() for result in in_flight):
        assert answer.status_code == 500, answer.text
        assert error_of(answer) == f'model "{TINY}" stopped unexpectedly: killed by SIGKILL'
    assert live.embed({"model": TINY, "input": SKY}).status_code == 200
    assert backend.load_calls == 2
    # Killed again and again: held back once it has died CRASH_LIMIT times in a minute.
    for death in range(2, CRASH_LIMIT + 1):
        os.kill(backend.models[-1].pid, signal.SIGKILL)
        wait_until(lambda: not backend.models[-1].alive())
        answer = live.embed({"model": TINY, "input": SKY})
        if death < CRASH_LIMIT:  # a runner that died while idle is replaced unseen
            assert answer.status_code == 200, answer.text
        else:
            assert answer.status_code == 500, answer.text
            assert error_of(answer) == (
                f'model "{TINY}" stopped unexpectedly {CRASH_LIMIT} times within a minute; '
                "it is held back until its file changes or emberd restarts"
            )
    assert backend.load_calls == CRASH_LIMIT
    assert live.embed({"model": "tiny-cls", "input": SKY}).status_code == 200  # others serve
    path = stores.emberd / f"{TINY}.gguf"
    path.write_bytes(model_files.mean.read_bytes())  # a new file, a new chance
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert live.embed({"model": TINY, "input": SKY}).status_code == 200


def test_unloading_a_model_ends_its_runner(
    serve: ServerFactory, tmp_path: Path, model_files: ModelFiles
) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend, model_stores=make_stores(tmp_path, model_files))
    assert live.embed({"model": TINY, "input": SKY, "keep_alive": 0}).status_code == 200
    pid = backend.models[0].pid
    wait_until(lambda: not _exists(pid))


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_runner_refuses_a_file_that_changed_after_it_was_checked(
    tmp_path: Path, model_files: ModelFiles
) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(model_files.mean.read_bytes())
    vetted = file_version(path)
    path.write_bytes(model_files.cls.read_bytes())  # swapped after the check
    backend = RunnerBackend()
    try:
        with pytest.raises(ModelLoadError, match="changed after it was checked"):
            backend.load(path, OPTIONS, vetted)
        model = backend.load(path, OPTIONS, file_version(path))
        model.close()
    finally:
        backend.close()
