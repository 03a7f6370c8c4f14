"""Header values that llama.cpp trusts and aborts on: refused before it sees the file.

llama.cpp runs in a runner process per model, and some values in a GGUF header
reach a C assert or a division instead of an error message: a layer count of
0 or past its fixed per-layer arrays, a NaN norm epsilon, an unknown pooling
type. Each is checked here, by the runner that is about to load the file. No
list of checks is complete: whatever slips through ends only that runner
(backends/runner.py), not the server.
"""

from __future__ import annotations

from emberd.models.errors import InvalidModelFile
from emberd.models.gguf_meta import GGUFInfo

# llama.cpp's per-layer hyper-parameters live in arrays of this size.
MAX_LAYERS = 512
# Pooling types llama.cpp knows: -1 unspecified, 0 none ... 4 rank.
POOLING_TYPES = range(-1, 5)


def check_loadable(info: GGUFInfo) -> None:
    """Raise InvalidModelFile for header values that would crash llama.cpp."""
    arch = info.architecture
    if not 1 <= info.block_count <= MAX_LAYERS:
        _fail(f"{arch}.block_count is {info.block_count}, not between 1 and {MAX_LAYERS}")
    if info.embedding_length < 1:
        _fail(f"{arch}.embedding_length is {info.embedding_length}")
    if info.pooling_type is not None and info.pooling_type not in POOLING_TYPES:
        _fail(f"{arch}.pooling_type {info.pooling_type} is not a pooling type llama.cpp knows")
    for key in ("attention.head_count", "attention.head_count_kv", "feed_forward_length"):
        value = info.model_info.get(f"{arch}.{key}")
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            _fail(f"{arch}.{key} is {value}")
    heads = info.model_info.get(f"{arch}.attention.head_count")
    explicit_head_size = f"{arch}.attention.key_length" in info.model_info
    if (
        isinstance(heads, int)
        and heads > 0
        and not explicit_head_size
        and info.embedding_length % heads
    ):
        _fail(
            f"{arch}.embedding_length {info.embedding_length} is not a multiple of "
            f"{arch}.attention.head_count {heads}"
        )
    for key in sorted(info.non_finite):
        _fail(f"{key} is not a finite number")
    for key, value in info.model_info.items():
        if key.endswith("epsilon") and isinstance(value, float) and value < 0:
            _fail(f"{key} is negative")


def _fail(reason: str) -> None:
    raise InvalidModelFile(f"unsupported model file: {reason}")
