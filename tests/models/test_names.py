"""models.names: parsing, defaults, display and matching keys."""

from __future__ import annotations

import pytest

from emberd.models.errors import InvalidModelName, ModelError
from emberd.models.names import DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG, ModelName


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("all-minilm", (DEFAULT_HOST, DEFAULT_NAMESPACE, "all-minilm", DEFAULT_TAG)),
        ("all-minilm:l6-v2", (DEFAULT_HOST, DEFAULT_NAMESPACE, "all-minilm", "l6-v2")),
        ("jina/jina-embeddings", (DEFAULT_HOST, "jina", "jina-embeddings", "latest")),
        ("hf.co/org/repo:Q8_0", ("hf.co", "org", "repo", "Q8_0")),
        ("localhost:5000/ns/m:1.5", ("localhost:5000", "ns", "m", "1.5")),
        ("nomic-embed-text:v1.5", (DEFAULT_HOST, DEFAULT_NAMESPACE, "nomic-embed-text", "v1.5")),
        ("a_b.c-d:0_x", (DEFAULT_HOST, DEFAULT_NAMESPACE, "a_b.c-d", "0_x")),
    ],
)
def test_parse_fills_defaults(text: str, parts: tuple[str, str, str, str]) -> None:
    name = ModelName.parse(text)
    assert (name.host, name.namespace, name.model, name.tag) == parts


def test_parse_keeps_case_and_key_ignores_it() -> None:
    name = ModelName.parse("All-MiniLM:Latest")
    assert name.model == "All-MiniLM"
    assert name.tag == "Latest"
    assert name.key == "registry.ollama.ai/library/all-minilm:latest"
    assert name.key == ModelName.parse("all-minilm").key
    assert name.key == ModelName.parse("REGISTRY.ollama.ai/Library/all-minilm:LATEST").key
    assert name.key != ModelName.parse("all-minilm:v2").key


@pytest.mark.parametrize(
    ("text", "display"),
    [
        ("all-minilm", "all-minilm:latest"),
        ("registry.ollama.ai/library/all-minilm:v2", "all-minilm:v2"),
        ("Registry.Ollama.AI/LIBRARY/x", "x:latest"),
        ("jina/emb:v1", "jina/emb:v1"),
        ("hf.co/org/repo:Q8_0", "hf.co/org/repo:Q8_0"),
        ("hf.co/library/repo", "hf.co/library/repo:latest"),
    ],
)
def test_display(text: str, display: str) -> None:
    name = ModelName.parse(text)
    assert name.display == display
    assert str(name) == display


def test_tag_length_limit() -> None:
    assert ModelName.parse("m:" + "t" * 128).tag == "t" * 128
    with pytest.raises(InvalidModelName):
        ModelName.parse("m:" + "t" * 129)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "../x",
        "..",
        "/etc/passwd",
        "a/../../b",
        "a\\b",
        "..\\..\\x",
        "a//b",
        "a/",
        "/a",
        "m:",
        ":tag",
        "m:a:b",
        "m:../x",
        "m:.hidden",
        "-m",
        ".m",
        "_m",
        "a b",
        "m\x00",
        "h/n/m/x",
        "localhost:5000/m",
        "host:port/ns/m",
        "m@sha256:abc",
        "m:tag/x",
        "ümlaut",
        # Names Windows cannot create as files or folders.
        "con",
        "NUL",
        "aux:latest",
        "com1",
        "LPT9",
        "nul.gguf",
        "m:con",
        "ns./m",
        "m.",
        "m:latest.",
        "con/m",
        "m:1:2",
    ],
)
def test_invalid_names(text: str) -> None:
    with pytest.raises(InvalidModelName) as info:
        ModelName.parse(text)
    assert str(info.value) == "invalid model name"
    assert isinstance(info.value, ModelError)


def test_check_refuses_a_hand_built_bad_name() -> None:
    with pytest.raises(InvalidModelName):
        ModelName(DEFAULT_HOST, DEFAULT_NAMESPACE, "..", DEFAULT_TAG).check()
    ModelName(DEFAULT_HOST, DEFAULT_NAMESPACE, "ok", DEFAULT_TAG).check()
