"""Map a checkpoint's tensors to GGUF names, check them, and plan how each is written."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from emberd.models.gguf_out import FileType, TensorOut, gguf_names, storage_type

Array = npt.NDArray[np.floating]
Rename = Callable[[str], "str | None"]


def plan_tensors(
    tensors: Mapping[str, Array],
    rename: Rename,
    expected: Mapping[str, tuple[int, ...]],
    file_type: FileType,
    *,
    optional: frozenset[str] = frozenset(),
    transform: Mapping[str, Callable[[Array], Array]] | None = None,
    keep_f16: frozenset[str] = frozenset(),
    keep_f32: frozenset[str] = frozenset(),
) -> list[TensorOut]:
    """The tensors to write, by GGUF name, in `expected`'s order.

    `rename` gives a checkpoint name's GGUF name (None: dropped; ValueError:
    not part of this architecture). Every name of `expected` must be present
    unless `optional`, with its shape there (numpy's, Hugging Face's order)
    and a float dtype; `transform` changes a tensor's values as it is read.
    Names in `keep_f32` stay F32 and those in `keep_f16` are never quantized.
    Raises ValueError naming what is unsupported, missing, doubled or misshapen.
    """
    by_gguf = gguf_names(tensors, rename)
    missing = sorted(set(expected) - set(by_gguf) - optional)
    if missing:
        raise ValueError(f"missing tensors (GGUF names): {', '.join(missing)}")
    extra = sorted(by_gguf[name] for name in set(by_gguf) - set(expected))
    if extra:
        raise ValueError(f"tensors beyond the configured layers: {', '.join(extra)}")
    planned = []
    for name, shape in expected.items():
        if name not in by_gguf:
            continue
        source = by_gguf[name]
        value = tensors[source]
        actual = tuple(int(d) for d in value.shape)
        if actual != shape:
            raise ValueError(f"tensor {source!r} has shape {actual}, expected {shape}")
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"tensor {source!r} has dtype {value.dtype}, not float")
        change = (transform or {}).get(name)
        qtype = storage_type(shape, file_type, keep_f32=name in keep_f32, keep_f16=name in keep_f16)
        planned.append(TensorOut(name, shape, qtype, _reader(tensors, source, change)))
    return planned


def _reader(
    tensors: Mapping[str, Array], source: str, change: Callable[[Array], Array] | None
) -> Callable[[], Array]:
    if change is None:
        return lambda: tensors[source]
    return lambda: change(np.asarray(tensors[source], dtype=np.float32))


def layer_rename(
    fixed: Mapping[str, str], per_layer: Mapping[str, str], layer_prefix: str
) -> Callable[[str], str | None]:
    """A `rename` for names `<fixed key>.<suffix>` and `<layer_prefix>.<N>.<part>.<suffix>`.

    `fixed` maps whole stems (e.g. "emb_ln") and `per_layer` maps the part
    after the layer number (e.g. "attn.Wqkv") to GGUF stems; the suffix
    (weight, bias) is kept.
    """

    def rename(hf_name: str) -> str | None:
        stem, _, suffix = hf_name.rpartition(".")
        if suffix not in ("weight", "bias"):
            raise ValueError(hf_name)
        if stem in fixed:
            return f"{fixed[stem]}.{suffix}"
        head = layer_prefix + "."
        if stem.startswith(head):
            number, _, part = stem[len(head) :].partition(".")
            if number.isdigit() and part in per_layer:
                return f"blk.{int(number)}.{per_layer[part]}.{suffix}"
        raise ValueError(hf_name)

    return rename
