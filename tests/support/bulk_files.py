"""Corpus files for the embed-file tests, and reading their outputs back."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.support.harness import Stores

_WORDS = (
    "why",
    "is",
    "the",
    "sky",
    "blue",
    "grass",
    "green",
    "sun",
    "red",
    "sea",
    "water",
    "tree",
    "leaf",
    "fire",
    "night",
    "day",
    "cat",
    "dog",
    "hello",
    "world",
    "good",
    "big",
)


def corpus(count: int, seed: int = 0) -> list[str]:
    """`count` short lowercase sentences the tiny model's vocabulary holds."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 12))) for _ in range(count)]


def write_corpus(path: Path, texts: Sequence[str], ids: Sequence[object] | None = None) -> Path:
    """`texts` (with `ids`) in the format the extension of `path` names."""
    records = [
        {"text": t} if ids is None else {"id": i, "text": t}
        for t, i in zip(texts, ids or [None] * len(texts), strict=True)
    ]
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif suffix == ".txt":
        path.write_text("".join(t + "\n" for t in texts))
    elif suffix == ".csv":
        with path.open("w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=list(records[0]))
            out.writeheader()
            out.writerows(records)
    else:
        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=7)
    return path


def read_output(path: Path) -> pa.Table:
    """The Parquet output."""
    return pq.read_table(path)


def vectors_of(table: pa.Table) -> np.ndarray:
    """The embedding column as a float32 matrix."""
    column = table.column("embedding").combine_chunks()
    return column.flatten().to_numpy().reshape(len(table), column.type.list_size)


def store_env(stores: Stores, **extra: str) -> Mapping[str, str]:
    """The environment that makes the CLI read the test stores (one thread)."""
    return {
        "HOME": str(stores.emberd.parent),
        "EMBERD_MODELS": str(stores.emberd),
        "OLLAMA_MODELS": str(stores.ollama),
        "EMBERD_NUM_THREAD": "1",
        **extra,
    }
