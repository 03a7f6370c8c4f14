"""Load options are bounded by what the machine can do: an absurd value is a 400.

`num_thread` 100000 once killed the process inside the OpenMP runtime, so
the HTTP cases run against a server in a child process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emberd.server.core.errors import InvalidRequest
from emberd.server.core.options import (
    MAX_GPU_LAYERS,
    ServerDefaults,
    load_overrides,
    resolve_load_options,
)
from tests.support.subprocess_server import child_server_in
from tests.support.tiny_model import write_ollama_layout, write_tiny_bert

DEFAULTS = ServerDefaults(context_length=4096, num_thread=2, gpu_devices=0, cpu_count=2)


def resolve(options: dict[str, object], n_ctx_train: int = 512) -> object:
    return resolve_load_options(DEFAULTS, {}, load_overrides(options), n_ctx_train)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"num_thread": 100_000}, "num_thread"),
        ({"num_thread": 9}, "num_thread"),
        ({"num_thread": -5}, "num_thread"),
        ({"num_ctx": -1}, "num_ctx"),
        ({"num_ctx": 1 << 40}, "num_ctx"),
        ({"num_batch": -3}, "num_batch"),
        ({"num_batch": 1e12}, "num_batch"),
        ({"main_gpu": 1}, "main_gpu"),
        ({"main_gpu": -1}, "main_gpu"),
    ],
)
def test_absurd_values_are_refused_naming_the_option(
    options: dict[str, object], named: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        resolve(options)
    assert f'option "{named}"' in refused.value.message


def test_sane_values_are_kept_or_clamped_to_the_model() -> None:
    chosen = resolve({"num_thread": 8, "num_ctx": 100_000, "num_batch": 100_000, "num_gpu": 10**9})
    assert chosen.num_thread == 8  # 4 per core on a 2-core machine
    assert chosen.num_ctx == 512  # the trained context
    assert chosen.num_batch == 512  # never more than the context
    assert chosen.num_gpu == MAX_GPU_LAYERS
    assert resolve({"num_thread": 0}).num_thread == DEFAULTS.num_thread
    assert resolve({"num_gpu": -7}).num_gpu == -1


def test_models_are_read_into_memory_unless_asked() -> None:
    assert resolve({}).use_mmap is False
    assert resolve({"use_mmap": True}).use_mmap is True


def test_a_server_refuses_absurd_threads_and_keeps_serving(tmp_path: Path) -> None:
    (tmp_path / "emberd").mkdir()
    write_tiny_bert(tmp_path / "emberd" / "tiny.gguf")
    with child_server_in(tmp_path) as child:
        for threads in (100_000, 30_000):
            body = {"model": "tiny", "input": "sky", "options": {"num_thread": threads}}
            response = child.client.post("/api/embed", json=body)
            assert response.status_code == 400, response.text
            assert 'option "num_thread" must be between' in response.json()["error"]
        response = child.client.post("/api/embed", json={"model": "tiny", "input": "sky"})
        assert response.status_code == 200, response.text
        assert child.alive()


def test_a_model_params_layer_out_of_bounds_is_clamped_not_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    params = {"num_thread": 64, "num_ctx": -5, "num_batch": 1 << 40, "main_gpu": 3}
    chosen = resolve_load_options(DEFAULTS, params, {}, 512)
    assert chosen.num_thread == DEFAULTS.max_threads
    assert chosen.num_ctx == 1
    assert chosen.num_batch == 1  # never more than the context
    assert chosen.main_gpu == 0
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "model parameter num_thread 64 is outside -1..8" in warned
    assert "model parameter main_gpu 3" in warned


def test_a_request_still_gets_its_400_over_a_params_layer() -> None:
    with pytest.raises(InvalidRequest, match='option "num_thread"'):
        resolve_load_options(DEFAULTS, {"num_thread": 64}, load_overrides({"num_thread": 64}), 512)
    # And the request's own value wins over the model's clamped one.
    chosen = resolve_load_options(
        DEFAULTS, {"num_thread": 64}, load_overrides({"num_thread": 3}), 512
    )
    assert chosen.num_thread == 3


def test_a_model_with_absurd_params_embeds_on_every_route(tmp_path: Path) -> None:
    gguf = write_tiny_bert(tmp_path / "tiny.gguf")
    (tmp_path / "emberd").mkdir()
    write_ollama_layout(tmp_path / "ollama", gguf, name="greedy", params={"num_thread": 64})
    with child_server_in(tmp_path) as child:
        response = child.client.post("/api/embed", json={"model": "greedy", "input": "sky"})
        assert response.status_code == 200, response.text
        response = child.client.post("/v1/embeddings", json={"model": "greedy", "input": "sky"})
        assert response.status_code == 200, response.text
        body = {"model": "greedy", "input": "sky", "options": {"num_thread": 100_000}}
        response = child.client.post("/api/embed", json=body)
        assert response.status_code == 400, response.text
        assert 'option "num_thread" must be between' in response.json()["error"]
