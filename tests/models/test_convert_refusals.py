"""models.convert: what llama.cpp cannot run is refused by name, and the store stays empty."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from emberd.models.errors import CheckpointError
from emberd.models.importer import import_checkpoint
from emberd.models.store import ModelStores
from tests.support.hf_families import (
    Family,
    write_gemma3,
    write_json,
    write_nomic_bert,
    write_qwen3,
    write_xlm_roberta,
)


def _edit(relative: str, **changes: object) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        path = directory / relative
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return edit


def _edit_tokenizer(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        data = json.loads((directory / "tokenizer.json").read_text())
        change(data)
        write_json(directory / "tokenizer.json", data)

    return edit


def _add_module(kind: str, path: str) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        modules = json.loads((directory / "modules.json").read_text())
        modules.insert(2, {"idx": 9, "path": path, "type": f"sentence_transformers.models.{kind}"})
        write_json(directory / "modules.json", modules)

    return edit


def _nest(relative: str) -> Callable[[Path], None]:
    """Replace a JSON file with one nested deeper than Python's parser can recurse."""

    def edit(directory: Path) -> None:
        depth = 100_000
        (directory / relative).write_text("[" * depth + "]" * depth)

    return edit


def _drop_last_dense(directory: Path) -> None:
    modules = json.loads((directory / "modules.json").read_text())
    write_json(directory / "modules.json", [m for m in modules if m["path"] != "3_Dense"])


Writer = Callable[[Path], Family]
REFUSALS: dict[str, tuple[Writer, Callable[[Path], None], str]] = {
    "another-model-type": (
        write_xlm_roberta,
        _edit("config.json", model_type="mpnet"),
        "unsupported model_type 'mpnet'; emberd imports bert, xlm-roberta, nomic_bert, qwen3",
    ),
    "unknown-module": (
        write_qwen3,
        _add_module("LayerNorm", "2_LayerNorm"),
        "unsupported sentence-transformers module 'sentence_transformers.models.LayerNorm'",
    ),
    "dense-on-xlm-roberta": (
        write_xlm_roberta,
        _add_module("Dense", "2_Dense"),
        "unsupported sentence-transformers module 'sentence_transformers.models.Dense'",
    ),
    "xlm-roberta-bpe-tokenizer": (
        write_xlm_roberta,
        _edit_tokenizer(lambda t: t.update(model={"type": "BPE", "vocab": {}, "merges": []})),
        "unsupported tokenizer model 'BPE'; need Unigram",
    ),
    "xlm-roberta-lowercasing": (
        write_xlm_roberta,
        _edit_tokenizer(lambda t: t.update(normalizer={"type": "Lowercase"})),
        "unsupported normalizer 'Lowercase' for a unigram vocabulary",
    ),
    "nomic-moe": (
        write_nomic_bert,
        _edit("config.json", moe_every_n_layers=2),
        "mixture-of-experts nomic-bert models are not supported",
    ),
    "nomic-mlp-bias": (
        write_nomic_bert,
        _edit("config.json", mlp_fc1_bias=True),
        "unsupported mlp_fc1_bias True",
    ),
    "qwen3-unknown-split": (
        write_qwen3,
        _edit_tokenizer(
            lambda t: t["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex=r"\s+")
        ),
        r"unsupported pre-tokenizer regex '\\\\s\+'",
    ),
    "qwen3-without-eos": (
        write_qwen3,
        _edit_tokenizer(lambda t: t.update(post_processor=None)),
        "last-token pooling needs a post_processor that appends the EOS token",
    ),
    "gemma3-causal": (
        write_gemma3,
        _edit("config.json", use_bidirectional_attention=False),
        "only Gemma3 embedding models",
    ),
    "gemma3-one-dense": (
        write_gemma3,
        _drop_last_dense,
        r"unsupported Dense modules \(64 -> 128\)",
    ),
    "gemma3-dense-bias": (
        write_gemma3,
        _edit("2_Dense/config.json", bias=True),
        "a Dense bias is not applied by llama.cpp",
    ),
    "deeply-nested-config": (
        write_xlm_roberta,
        _nest("config.json"),
        "config.json: not valid JSON: nested too deeply",
    ),
    "deeply-nested-tokenizer": (
        write_qwen3,
        _nest("tokenizer.json"),
        "tokenizer.json: not valid JSON: nested too deeply",
    ),
    "gemma3-dense-activation": (
        write_gemma3,
        _edit("3_Dense/config.json", activation_function="torch.nn.modules.activation.Tanh"),
        "unsupported Dense activation",
    ),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_unsupported_checkpoints_are_refused_by_name(
    tmp_path: Path, case: tuple[Writer, Callable[[Path], None], str]
) -> None:
    write, damage, message = case
    family = write(tmp_path / "checkpoint")
    damage(family.directory)
    stores = ModelStores(tmp_path / "emberd", None)
    with pytest.raises(CheckpointError, match=message):
        import_checkpoint(family.directory, "refused", stores)
    assert stores.list() == []
    assert not (tmp_path / "emberd").exists() or not any((tmp_path / "emberd").rglob("*"))
