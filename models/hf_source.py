"""Read what every Hugging Face / sentence-transformers checkpoint directory has.

Whatever the architecture, a checkpoint directory holds `config.json`,
safetensors weights (one file, or shards and an index), tokenizer files, and
for sentence-transformers the module pipeline:

    modules.json                   Transformer, Pooling, Dense, Normalize
    1_Pooling/config.json          which pooling (mean, CLS, last token)
    2_Dense/config.json, ...       a linear projection after pooling
    sentence_bert_config.json      max_seq_length

This module owns reading those shared files (JSON with clear errors, the
module pipeline, the weight files, the weights themselves one tensor at a
time without torch, bf16 widened to float32). What the architecture and its
tokenizer mean is each converter's business.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors import safe_open

from emberd.models.errors import CheckpointError

# sentence-transformers pooling flags -> GGUF pooling type (llama.cpp numbering).
_POOLING_MODES: Mapping[str, tuple[str, int | None]] = {
    "pooling_mode_mean_tokens": ("mean", 1),
    "pooling_mode_cls_token": ("cls", 2),
    "pooling_mode_lasttoken": ("lasttoken", 3),
    "pooling_mode_max_tokens": ("max", None),
    "pooling_mode_mean_sqrt_len_tokens": ("mean_sqrt_len", None),
    "pooling_mode_weightedmean_tokens": ("weightedmean", None),
}
_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
_MODULE = "sentence_transformers.models."


@dataclass(frozen=True)
class DenseModule:
    """A sentence-transformers Dense module: a linear map applied after pooling."""

    path: Path  # its directory (config.json, model.safetensors)
    in_features: int
    out_features: int
    bias: bool
    activation: str  # e.g. "torch.nn.modules.linear.Identity"


@dataclass(frozen=True)
class Modules:
    """The sentence-transformers module pipeline of a checkpoint."""

    transformer_path: str
    pooling: str  # "mean", "cls" or "lasttoken"
    pooling_type: int  # GGUF numbering: 1 mean, 2 CLS, 3 last
    normalize: bool
    dense: tuple[Path, ...] = ()  # directories of Dense modules, in order (see read_dense)
    declared_pooling: bool = False  # a Pooling module said which pooling


def read_modules(source: Path) -> Modules:
    """The module pipeline of modules.json; a plain encoder (no modules.json) is mean-pooled."""
    modules = read_json_file(source / "modules.json", kind=list)
    if modules is None:
        return Modules("", "mean", 1, normalize=False)
    transformer, pooling, pooling_type, normalize = "", "mean", 1, False
    declared = False
    dense: list[Path] = []
    for module in modules:
        if not isinstance(module, dict) or not isinstance(module.get("type"), str):
            raise CheckpointError(f"{source / 'modules.json'}: an entry has no type")
        kind = module["type"].removeprefix(_MODULE)
        path = str(module.get("path") or "")
        if kind == "Transformer":
            transformer = path
        elif kind == "Pooling":
            pooling, pooling_type = _read_pooling(source / path / "config.json")
            declared = True
        elif kind == "Normalize":
            normalize = True
        elif kind == "Dense":
            dense.append(source / path)
        else:
            raise CheckpointError(
                f"{source}: unsupported sentence-transformers module {module['type']!r} "
                "(only Transformer, Pooling, Dense and Normalize can be converted)"
            )
    return Modules(transformer, pooling, pooling_type, normalize, tuple(dense), declared)


def _read_pooling(path: Path) -> tuple[str, int]:
    """(name, GGUF pooling type) of a Pooling module's config; mean when it has none."""
    config = read_json_file(path)
    if config is None:
        return "mean", 1
    chosen = [mode for key, mode in _POOLING_MODES.items() if config.get(key) is True]
    if len(chosen) != 1:
        names = ", ".join(name for name, _ in chosen) or "none"
        raise CheckpointError(f"{path}: exactly one pooling mode must be set (found: {names})")
    name, pooling_type = chosen[0]
    if pooling_type is None:
        raise CheckpointError(
            f"{path}: unsupported pooling {name!r} (llama.cpp pools by mean, CLS or last token)"
        )
    return name, pooling_type


def read_dense(directory: Path) -> DenseModule:
    """The Dense module in `directory` (its config.json; the weights stay on disk)."""
    where = directory / "config.json"
    config = read_json_file(where, required=True)
    activation = config.get("activation_function") or "torch.nn.modules.linear.Identity"
    return DenseModule(
        path=directory,
        in_features=config_int(config, "in_features", where),
        out_features=config_int(config, "out_features", where),
        bias=config.get("bias", True) is not False,
        activation=str(activation),
    )


def read_max_seq_length(source: Path, model_dir: Path) -> int | None:
    """sentence-transformers' truncation length, when the checkpoint sets one."""
    st_config = read_json_file(model_dir / "sentence_bert_config.json") or read_json_file(
        source / "sentence_bert_config.json"
    )
    value = st_config.get("max_seq_length") if st_config else None
    return value if isinstance(value, int) and value > 0 else None


def weight_files(model_dir: Path) -> tuple[Path, ...]:
    """The safetensors files of a model directory (a single file or indexed shards)."""
    single = model_dir / "model.safetensors"
    if single.is_file():
        return (single,)
    index = read_json_file(model_dir / "model.safetensors.index.json")
    if index is not None:
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{model_dir}: model.safetensors.index.json has no weight_map")
        files = tuple(model_dir / f for f in sorted(set(map(str, weight_map.values()))))
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{model_dir}: missing weight files {', '.join(missing)}")
        return files
    if (model_dir / "pytorch_model.bin").exists():
        raise CheckpointError(
            f"{model_dir}: only pytorch_model.bin found; save the weights as model.safetensors"
        )
    raise CheckpointError(f"{model_dir}: no model.safetensors")


# -- the weights


@contextlib.contextmanager
def open_weights(
    files: tuple[Path, ...], is_weight: Callable[[str], bool] = lambda _: True
) -> Iterator[Mapping[str, npt.NDArray[np.floating]]]:
    """The tensors of safetensors `files` as a mapping that reads each on access.

    A tensor for which `is_weight(name)` holds must have a float dtype.
    """
    with contextlib.ExitStack() as stack:
        tensors = _LazyTensors(is_weight)
        for path in files:
            try:
                handle = stack.enter_context(safe_open(str(path), framework="numpy"))
                tensors.add(path, handle)
            except CheckpointError:
                raise
            except Exception as exc:  # the package raises its own error types
                raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from exc
        yield tensors


class _LazyTensors(Mapping[str, npt.NDArray[np.floating]]):
    """Tensors by name across safetensors files, read (and bf16 widened) when asked for."""

    def __init__(self, is_weight: Callable[[str], bool]) -> None:
        self._is_weight = is_weight
        self._where: dict[str, tuple[Path, Any]] = {}
        self._dtypes: dict[str, str] = {}
        self._headers: dict[Path, tuple[int, dict[str, Any]]] = {}

    def add(self, path: Path, handle: Any) -> None:
        names: list[str] = handle.keys()
        for name in names:
            if name in self._where:
                raise CheckpointError(f"{path}: tensor {name!r} is also in {self._where[name][0]}")
            dtype = str(handle.get_slice(name).get_dtype())
            if dtype not in _FLOAT_DTYPES and self._is_weight(name):
                raise CheckpointError(
                    f"{path}: tensor {name!r} has dtype {dtype}; "
                    f"weights must be one of {', '.join(sorted(_FLOAT_DTYPES))}"
                )
            self._where[name] = (path, handle)
            self._dtypes[name] = dtype

    def __getitem__(self, name: str) -> npt.NDArray[np.floating]:
        path, handle = self._where[name]
        if self._dtypes[name] == "BF16":
            return self._read_bf16(path, name)
        array: npt.NDArray[np.floating] = handle.get_tensor(name)
        return array

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def _read_bf16(self, path: Path, name: str) -> npt.NDArray[np.floating]:
        """numpy has no bfloat16: read the raw halves and widen them to float32."""
        if path not in self._headers:
            self._headers[path] = _safetensors_header(path)
        data_start, header = self._headers[path]
        entry = header[name]
        begin, end = entry["data_offsets"]
        raw = np.fromfile(path, dtype="<u2", count=(end - begin) // 2, offset=data_start + begin)
        widened = (raw.astype(np.uint32) << 16).view(np.float32)
        return widened.reshape(tuple(entry["shape"]))


def _safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(offset of the data, header) of a safetensors file: a u64 length, then JSON."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = _parse_json(f.read(length), path)
    return 8 + length, header


def _parse_json(data: str | bytes, path: Path) -> Any:
    """JSON text parsed; CheckpointError for bad JSON and for nesting too deep to read.

    Python's parser recurses once per nesting level: a hostile file a few
    thousand brackets deep ends it with a RecursionError, not a ValueError.
    """
    try:
        return json.loads(data)
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from exc
    except RecursionError:
        raise CheckpointError(f"{path}: not valid JSON: nested too deeply") from None


# -- JSON files


def read_json_file(path: Path, *, required: bool = False, kind: type = dict) -> Any:
    """The JSON object (or `kind`) in `path`; None when absent and not required."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise CheckpointError(f"{path.parent}: no {path.name}") from None
        return None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror}") from exc
    value = _parse_json(text, path)
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: expected a JSON {kind.__name__}")
    return value


def config_int(config: Mapping[str, Any], key: str, where: Path) -> int:
    """`config[key]` as an integer; CheckpointError naming `where` otherwise."""
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CheckpointError(f"{where}: {key} is missing or not an integer")
    return value


def config_float(config: Mapping[str, Any], key: str, where: Path, default: float) -> float:
    """`config[key]` as a float (`default` when absent); CheckpointError when not a number."""
    value = config.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise CheckpointError(f"{where}: {key} is not a number")
    return float(value)


def token_text(value: object) -> str | None:
    """A special token as tokenizer configs spell it: a string or {"content": ...}."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"]) or None
    return None
