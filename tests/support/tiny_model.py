"""A tiny random BERT GGUF for tests, and an Ollama store around it.

The vocabulary covers lowercase English test sentences ("why is the sky
blue?"), every letter and digit both as a word start and as a `##`
continuation (so any ASCII word tokenizes without [UNK]), and common
punctuation. Weights are random but seeded: the same arguments give the same
file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import string
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from emberd.models.bert_gguf import BertHParams, FileType, WordPieceVocab, write_bert_gguf

_CONTROL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# fmt: off
_WORDS = (
    "why", "is", "the", "sky", "blue", "grass", "green", "sun", "red", "sea", "water",
    "tree", "leaf", "fire", "night", "day", "a", "an", "and", "are", "as", "at", "be", "by",
    "can", "cat", "do", "does", "dog", "for", "from", "has", "have", "he", "hello", "her",
    "his", "how", "i", "in", "it", "its", "not", "of", "on", "or", "she", "that", "this",
    "to", "was", "we", "what", "when", "where", "who", "will", "with", "world", "you",
    "your", "they", "them", "there", "these", "those", "my", "me", "our", "us", "yes", "no",
    "good", "bad", "big", "small", "hot", "cold", "new", "old", "one", "two", "three",
)
# fmt: on
_SUFFIXES = ("##s", "##es", "##ed", "##ing", "##ly", "##er", "##est")

# The vocabulary, in id order (id = index), as it would appear in vocab.txt.
TINY_TOKENS: tuple[str, ...] = tuple(
    dict.fromkeys(
        [
            *_CONTROL,
            *_WORDS,
            *string.ascii_lowercase,
            *string.digits,
            *string.punctuation,
            *(f"##{c}" for c in string.ascii_lowercase + string.digits),
            *_SUFFIXES,
        ]
    )
)
TINY_VOCAB = WordPieceVocab(
    tokens=TINY_TOKENS,
    pad_id=TINY_TOKENS.index("[PAD]"),
    unk_id=TINY_TOKENS.index("[UNK]"),
    cls_id=TINY_TOKENS.index("[CLS]"),
    sep_id=TINY_TOKENS.index("[SEP]"),
    mask_id=TINY_TOKENS.index("[MASK]"),
)


def tiny_token_id(piece: str) -> int:
    """The id of a vocabulary piece (as in vocab.txt, e.g. "sky" or "##s")."""
    return TINY_TOKENS.index(piece)


def tiny_tensors(
    *, context_length: int, embedding_length: int, block_count: int, ff: int, seed: int
) -> dict[str, np.ndarray]:
    """Random BERT weights by Hugging Face name: matrices ~N(0, 0.02), norms 1 and 0."""
    rng = np.random.default_rng(seed)
    e = embedding_length

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def norm(prefix: str, out: dict[str, np.ndarray]) -> None:
        out[f"{prefix}.weight"] = np.ones(e, np.float32)
        out[f"{prefix}.bias"] = np.zeros(e, np.float32)

    tensors = {
        "embeddings.word_embeddings.weight": normal(len(TINY_TOKENS), e),
        "embeddings.position_embeddings.weight": normal(context_length, e),
        "embeddings.token_type_embeddings.weight": normal(2, e),
    }
    norm("embeddings.LayerNorm", tensors)
    for i in range(block_count):
        p = f"encoder.layer.{i}"
        for part in ("attention.self.query", "attention.self.key", "attention.self.value"):
            tensors[f"{p}.{part}.weight"] = normal(e, e)
            tensors[f"{p}.{part}.bias"] = normal(e)
        tensors[f"{p}.attention.output.dense.weight"] = normal(e, e)
        tensors[f"{p}.attention.output.dense.bias"] = normal(e)
        norm(f"{p}.attention.output.LayerNorm", tensors)
        tensors[f"{p}.intermediate.dense.weight"] = normal(ff, e)
        tensors[f"{p}.intermediate.dense.bias"] = normal(ff)
        tensors[f"{p}.output.dense.weight"] = normal(e, ff)
        tensors[f"{p}.output.dense.bias"] = normal(e)
        norm(f"{p}.output.LayerNorm", tensors)
    return tensors


def tiny_hparams(
    *,
    context_length: int = 128,
    embedding_length: int = 32,
    block_count: int = 2,
    heads: int = 2,
    ff: int = 64,
    pooling: int = 1,
) -> BertHParams:
    """The hyper-parameters `write_tiny_bert` writes for the same arguments."""
    return BertHParams(
        context_length=context_length,
        embedding_length=embedding_length,
        block_count=block_count,
        feed_forward_length=ff,
        head_count=heads,
        layer_norm_epsilon=1e-12,
        pooling=pooling,
    )


def write_tiny_bert(
    path: Path,
    *,
    context_length: int = 128,
    embedding_length: int = 32,
    block_count: int = 2,
    heads: int = 2,
    ff: int = 64,
    pooling: int = 1,
    seed: int = 0,
    file_type: FileType = FileType.F32,
) -> Path:
    """Write a tiny random BERT GGUF at `path` and return `path`.

    `pooling` uses GGUF numbering: 1 mean, 2 CLS. The same `seed` gives the
    same weights whatever the file type, so files can be compared.
    """
    hparams = tiny_hparams(
        context_length=context_length,
        embedding_length=embedding_length,
        block_count=block_count,
        heads=heads,
        ff=ff,
        pooling=pooling,
    )
    tensors = tiny_tensors(
        context_length=context_length,
        embedding_length=embedding_length,
        block_count=block_count,
        ff=ff,
        seed=seed,
    )
    write_bert_gguf(Path(path), "tiny-bert", hparams, TINY_VOCAB, tensors, file_type)
    return Path(path)


MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
PARAMS_MEDIA_TYPE = "application/vnd.ollama.image.params"


def _put_blob(blobs: Path, data: bytes | None, source: Path | None = None) -> tuple[str, int]:
    """Store bytes (or a file's bytes) as `blobs/sha256-<hex>`; returns (digest, size)."""
    if source is not None:
        data = source.read_bytes()
    assert data is not None
    hex_digest = hashlib.sha256(data).hexdigest()
    target = blobs / f"sha256-{hex_digest}"
    if source is not None:
        shutil.copyfile(source, target)
    else:
        target.write_bytes(data)
    return f"sha256:{hex_digest}", len(data)


def write_ollama_layout(
    root: Path,
    gguf: Path,
    name: str = "tiny",
    tag: str = "latest",
    params: dict[str, Any] | None = None,
) -> Path:
    """Lay `gguf` out as an Ollama model store under `root`; returns `root`.

    Writes the GGUF, a config blob and, when `params` is given, a params
    layer under `blobs/`, and the manifest at
    `manifests/registry.ollama.ai/library/<name>/<tag>`.
    """
    root = Path(root)
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    model_digest, model_size = _put_blob(blobs, None, source=Path(gguf))
    layers = [{"mediaType": MODEL_MEDIA_TYPE, "digest": model_digest, "size": model_size}]
    if params is not None:
        digest, size = _put_blob(blobs, json.dumps(params).encode())
        layers.append({"mediaType": PARAMS_MEDIA_TYPE, "digest": digest, "size": size})
    config = {
        "model_format": "gguf",
        "model_family": "bert",
        "model_families": ["bert"],
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    config_digest, config_size = _put_blob(blobs, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": layers,
    }
    manifest_path = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest))
    return root


def load_with_llama(path: Path, n_ctx: int = 128) -> llama_cpp.Llama:
    """The GGUF loaded by llama-cpp-python's own `Llama`: a reference that is not emberd's."""
    return llama_cpp.Llama(
        str(path), embedding=True, verbose=False, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx
    )


def embed_with_llama(path: Path, texts: list[str], n_ctx: int = 128) -> np.ndarray:
    """Unit-length vectors of `texts` from `Llama.embed` (the model is freed afterwards)."""
    model = load_with_llama(path, n_ctx)
    try:
        vectors = np.asarray(model.embed(texts), dtype=np.float64)
    finally:
        model.close()
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
