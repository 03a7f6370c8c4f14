"""Models over HTTP: /api/tags, /api/show, /api/ps, names and the stores' boundaries."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from gguf import GGUFReader

from emberd.backends.llama_cpp import compute_devices
from tests.support.gguf_files import write_gguf
from tests.support.harness import (
    OLLAMA_NUM_CTX,
    OLLAMA_PARAMS,
    OLLAMA_TINY,
    TINY,
    TINY_CLS,
    TINY_CONTEXT,
    TINY_DIM,
    LiveServer,
    RecordingBackend,
    ServerFactory,
    Stores,
)

TINY_DETAILS = {
    "format": "gguf",
    "family": "bert",
    "families": ["bert"],
    "parameter_size": "28K",
    "quantization_level": "F32",
}
MANIFEST = "manifests/registry.ollama.ai/library/ollama-tiny/latest"


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, text
    return moment


# -- /api/tags ---------------------------------------------------------------------


def test_tags_lists_both_stores_newest_first(server: LiveServer, stores: Stores) -> None:
    response = server.client.get("/api/tags")
    assert response.status_code == 200
    models = response.json()["models"]
    names = [m["name"] for m in models]
    assert names == ["tiny-cls:latest", "tiny:latest", "ollama-tiny:latest", "ollama-params:latest"]
    times = [parse_time(m["modified_at"]) for m in models]
    assert times == sorted(times, reverse=True)
    assert times[1] == datetime.fromtimestamp(1_700_000_000, timezone.utc)
    for entry in models:
        assert entry["model"] == entry["name"]
        assert {k: entry["details"][k] for k in TINY_DETAILS} == TINY_DETAILS
    by_name = {m["name"]: m for m in models}
    dropped = (stores.emberd / "tiny.gguf").read_bytes()
    assert by_name["tiny:latest"]["size"] == len(dropped)
    assert by_name["tiny:latest"]["digest"] == hashlib.sha256(dropped).hexdigest()
    manifest = (stores.ollama / MANIFEST).read_bytes()
    assert by_name["ollama-tiny:latest"]["digest"] == hashlib.sha256(manifest).hexdigest()
    assert by_name["ollama-tiny:latest"]["size"] > len(dropped)  # GGUF plus params layer


def test_tags_head_is_ok_without_a_body(server: LiveServer) -> None:
    response = server.client.head("/api/tags")
    assert response.status_code == 200
    assert response.content == b""


def test_tags_on_empty_stores_is_an_empty_list(serve: ServerFactory, tmp_path: Path) -> None:
    empty = Stores(emberd=tmp_path / "e", ollama=tmp_path / "o", outside=tmp_path / "x")
    live = serve(model_stores=empty)
    response = live.client.get("/api/tags")
    assert response.status_code == 200
    assert response.json() == {"models": []}


# -- /api/show ---------------------------------------------------------------------


@pytest.mark.parametrize("field", ["model", "name"])
def test_show_describes_the_model(server: LiveServer, field: str) -> None:
    response = server.client.post("/api/show", json={field: OLLAMA_TINY})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["capabilities"] == ["embedding"]
    assert data["embedding"] == {"pooling": "mean"}
    info = data["model_info"]
    assert info["general.architecture"] == "bert"
    assert info["bert.embedding_length"] == TINY_DIM
    assert info["bert.context_length"] == TINY_CONTEXT
    assert info["bert.pooling_type"] == 1
    assert {k: data["details"][k] for k in TINY_DETAILS} == TINY_DETAILS
    lines = [line.split() for line in data["parameters"].splitlines()]
    assert lines == [["num_ctx", str(OLLAMA_NUM_CTX)]]
    parse_time(data["modified_at"])


def test_show_verbose_gives_list_values_as_ollama_does(server: LiveServer, stores: Stores) -> None:
    plain = server.post_ok("/api/show", {"model": TINY})["model_info"]
    assert plain["tokenizer.ggml.tokens"] is None
    verbose = server.post_ok("/api/show", {"model": TINY, "verbose": True})["model_info"]
    # What an independent reader (the gguf package) finds in the same file.
    reader = GGUFReader(stores.emberd / f"{TINY}.gguf")
    tokens = reader.fields["tokenizer.ggml.tokens"]
    expected = [bytes(tokens.parts[i]).decode() for i in tokens.data]
    types = reader.fields["tokenizer.ggml.token_type"]
    assert verbose["tokenizer.ggml.tokens"] == expected and len(expected) > 10
    assert verbose["tokenizer.ggml.token_type"] == [int(types.parts[i][0]) for i in types.data]
    assert {k: v for k, v in verbose.items() if plain.get(k) is not None} == {
        k: v for k, v in plain.items() if v is not None
    }


def test_show_says_a_decoder_without_pooling_embeds_by_mean(
    serve: ServerFactory, tmp_path: Path
) -> None:
    # llama.cpp gives such a model's token vectors; the backend pools them by
    # mean, as Ollama does, so /api/show must not list it as able to do nothing.
    stores = Stores(emberd=tmp_path / "e", ollama=tmp_path / "o", outside=tmp_path / "x")
    stores.emberd.mkdir()
    write_gguf(stores.emberd / "decoder.gguf", pooling_type=None, arch="llama")
    data = serve(model_stores=stores).post_ok("/api/show", {"model": "decoder"})
    assert "llama.pooling_type" not in data["model_info"]
    assert data["capabilities"] == ["embedding"]
    assert data["embedding"] == {"pooling": "mean (the model declares no pooling)"}
    assert "rerank" not in data


def test_show_prints_parameters_as_ollama_does(server: LiveServer) -> None:
    response = server.client.post("/api/show", json={"model": OLLAMA_PARAMS})
    assert response.status_code == 200, response.text
    lines = [line.split(None, 1) for line in response.json()["parameters"].splitlines()]
    assert lines == [
        ["num_ctx", "32"],
        ["stop", '"</s>"'],
        ["stop", '"<|end|>"'],
        ["temperature", "0.5"],
        ["penalize_newline", "true"],
    ]
    # Values start in the 32nd column: the key padded to 30, then a space.
    assert all(line[31] != " " for line in response.json()["parameters"].splitlines())


def test_sampling_options_in_the_params_layer_are_ignored(serve: ServerFactory) -> None:
    live = serve()
    response = live.embed({"model": OLLAMA_PARAMS, "input": " ".join(["sky"] * 40)})
    assert response.status_code == 200, response.text
    assert response.json()["prompt_eval_count"] == 32
    assert [e["context_length"] for e in live.ps()] == [32]


def test_show_of_a_dropped_model_has_no_parameters(server: LiveServer) -> None:
    response = server.client.post("/api/show", json={"model": "TINY-CLS:latest"})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["parameters"] == ""
    assert data["model_info"]["bert.pooling_type"] == 2


@pytest.mark.parametrize("body", [{}, {"model": ""}, {"name": ""}])
def test_show_without_a_name_is_400(server: LiveServer, body: dict) -> None:
    response = server.client.post("/api/show", json=body)
    assert response.status_code == 400
    assert response.json() == {"error": "model is required"}


def test_show_of_an_unknown_model_is_404(server: LiveServer) -> None:
    response = server.client.post("/api/show", json={"model": "ghost:7b"})
    assert response.status_code == 404
    assert response.json() == {"error": 'model "ghost:7b" not found, try pulling it first'}


# -- names never leave the stores --------------------------------------------------


def escaping_names(stores: Stores) -> list[str]:
    outside = str(stores.outside)
    return [
        "../etc/passwd",
        "/abs",
        "a/../../b",
        "../outside",
        "..",
        "./tiny",
        "tiny/../tiny",
        "..\\outside",
        outside,
        outside.removesuffix(".gguf"),
        "/" + outside.lstrip("/").removesuffix(".gguf"),
        "file:" + outside,
        "tiny:../../outside",
        "%2e%2e/outside",
    ]


def test_names_that_point_outside_the_stores_are_refused(
    serve: ServerFactory, stores: Stores
) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend)
    for name in escaping_names(stores):
        for path, body in (
            ("/api/embed", {"model": name, "input": "sky"}),
            ("/api/embeddings", {"model": name, "prompt": "sky"}),
            ("/v1/embeddings", {"model": name, "input": "sky"}),
            ("/api/show", {"model": name}),
        ):
            response = live.client.post(path, json=body)
            assert 400 <= response.status_code < 500, (path, name, response.text)
            assert "error" in response.json()
    assert backend.load_calls == 0
    assert live.ps() == []


def test_names_windows_cannot_store_are_a_400(serve: ServerFactory) -> None:
    live = serve()
    for name in ("con", "NUL:latest", "aux.v2", "com1", "lpt9:tag", "m.", "m:latest."):
        response = live.embed({"model": name, "input": "sky"})
        assert response.status_code == 400, (name, response.text)
        assert response.json() == {"error": "invalid model name"}


# -- /api/ps -----------------------------------------------------------------------


def test_ps_is_empty_before_any_request(serve: ServerFactory) -> None:
    live = serve()
    assert live.ps() == []


def test_ps_describes_a_loaded_model(serve: ServerFactory, stores: Stores) -> None:
    live = serve()
    before = datetime.now(timezone.utc)
    response = live.embed({"model": TINY, "input": "sky", "keep_alive": "10m"})
    assert response.status_code == 200, response.text
    (entry,) = live.ps()
    assert entry["name"] == entry["model"] == "tiny:latest"
    dropped = (stores.emberd / "tiny.gguf").read_bytes()
    assert entry["size"] == len(dropped)
    # The whole tiny model on a GPU where this build has one, none on the CPU.
    assert entry["size_vram"] == (entry["size"] if compute_devices().gpus else 0)
    assert entry["digest"] == hashlib.sha256(dropped).hexdigest()
    assert {k: entry["details"][k] for k in TINY_DETAILS} == TINY_DETAILS
    assert entry["context_length"] == TINY_CONTEXT  # 4096 by default, clamped to the model
    expires = parse_time(entry["expires_at"])
    after = datetime.now(timezone.utc)
    assert before + timedelta(minutes=10) <= expires <= after + timedelta(minutes=10, seconds=1)


def test_ps_lists_the_latest_expiry_first(serve: ServerFactory) -> None:
    live = serve()
    assert live.embed({"model": TINY, "keep_alive": "10m"}).status_code == 200
    assert live.embed({"model": TINY_CLS, "keep_alive": "5m"}).status_code == 200
    assert live.loaded_names() == ["tiny:latest", "tiny-cls:latest"]
    assert live.embed({"model": TINY, "keep_alive": "1m"}).status_code == 200
    assert live.loaded_names() == ["tiny-cls:latest", "tiny:latest"]


def test_ollama_store_params_layer_sets_num_ctx(serve: ServerFactory) -> None:
    live = serve()
    words = " ".join(["sky"] * 100)
    response = live.embed({"model": OLLAMA_TINY, "input": words})
    assert response.status_code == 200, response.text
    assert response.json()["prompt_eval_count"] == OLLAMA_NUM_CTX
    (entry,) = live.ps()
    assert entry["name"] == "ollama-tiny:latest"
    assert entry["context_length"] == OLLAMA_NUM_CTX


def test_request_options_override_the_params_layer(serve: ServerFactory) -> None:
    live = serve()
    response = live.embed({"model": OLLAMA_TINY, "input": "sky", "options": {"num_ctx": 16}})
    assert response.status_code == 200, response.text
    assert [e["context_length"] for e in live.ps()] == [16]


def test_context_length_setting_is_the_default_num_ctx(serve: ServerFactory) -> None:
    live = serve(env={"OLLAMA_CONTEXT_LENGTH": "24"})
    response = live.embed({"model": TINY, "input": " ".join(["sky"] * 50)})
    assert response.status_code == 200, response.text
    assert response.json()["prompt_eval_count"] == 24
    assert [e["context_length"] for e in live.ps()] == [24]


def test_the_same_gguf_in_both_stores_loads_once_per_name(serve: ServerFactory) -> None:
    live = serve()
    tiny = live.vectors(TINY, "why is the sky blue")[0]
    ollama = live.vectors(OLLAMA_TINY, "why is the sky blue")[0]
    # Same weights, same text: the same vector, whichever store it came from.
    assert float(tiny @ ollama) > 0.9999
    assert sorted(live.loaded_names()) == ["ollama-tiny:latest", "tiny:latest"]
