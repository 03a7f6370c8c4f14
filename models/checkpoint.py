"""Read and check a sentence-transformers checkpoint directory (Hugging Face layout).

A checkpoint directory holds a BERT encoder and what sentence-transformers
adds around it:

    config.json                    BertConfig: sizes, layer count, heads, ...
    model.safetensors              weights by Hugging Face name (or shards and
                                   model.safetensors.index.json)
    tokenizer.json or vocab.txt    the WordPiece vocabulary
    tokenizer_config.json          lower-casing and special tokens
    special_tokens_map.json        special tokens
    modules.json                   the module pipeline: Transformer, Pooling,
                                   Normalize
    1_Pooling/config.json          which pooling (mean, CLS, last token)
    sentence_bert_config.json      max_seq_length

This module owns reading those files: `read_checkpoint` checks that the
directory describes something llama.cpp's BERT graph can run and returns it
as a `Checkpoint` (hyper-parameters, WordPiece vocabulary with its special
tokens and normalisation, pooling); `open_weights` reads the safetensors
weights one tensor at a time (no torch), widening bf16 to float32.
Anything unsupported is a `CheckpointError` naming the file at fault.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors import safe_open

from models.bert_gguf import BertHParams, WordPieceVocab, gguf_tensor_name
from models.errors import ModelError

# sentence-transformers pooling flags -> GGUF pooling type (llama.cpp numbering).
_POOLING_MODES: Mapping[str, tuple[str, int | None]] = {
    "pooling_mode_mean_tokens": ("mean", 1),
    "pooling_mode_cls_token": ("cls", 2),
    "pooling_mode_lasttoken": ("lasttoken", 3),
    "pooling_mode_max_tokens": ("max", None),
    "pooling_mode_mean_sqrt_len_tokens": ("mean_sqrt_len", None),
    "pooling_mode_weightedmean_tokens": ("weightedmean", None),
}
_SPECIAL = {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]"}
# Activations llama.cpp's BERT graph computes (GELU); the tanh forms differ only slightly.
_GELU = frozenset({"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"})
_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
_MODULE = "sentence_transformers.models."


class CheckpointError(ModelError):
    """A checkpoint that cannot be imported; the message says what is missing or unsupported."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint directory says, checked and ready to convert."""

    source: Path
    weight_files: tuple[Path, ...]
    tokenizer_file: Path
    hparams: BertHParams
    vocab: WordPieceVocab
    pooling: str  # "mean", "cls" or "lasttoken"
    normalize: bool  # a Normalize module follows pooling (emberd normalises on /api/embed anyway)
    max_seq_length: int | None  # sentence-transformers' truncation length, if set


# -- reading the checkpoint


def read_checkpoint(source: Path) -> Checkpoint:
    """Read and check the checkpoint directory `source`; CheckpointError if unsupported."""
    source = Path(source)
    if not source.is_dir():
        raise CheckpointError(f"{source}: not a directory")
    modules = _read_modules(source)
    model_dir = source / modules.transformer_path
    config = _read_json(model_dir / "config.json", required=True)
    hparams = _hparams(model_dir, config, modules.pooling_type)
    vocab_size = _int(config, "vocab_size", model_dir / "config.json")
    vocab, tokenizer_file = _read_vocab(model_dir, vocab_size)
    st_config = _read_json(model_dir / "sentence_bert_config.json") or _read_json(
        source / "sentence_bert_config.json"
    )
    max_seq = st_config.get("max_seq_length") if st_config else None
    if st_config and st_config.get("do_lower_case") is True and not vocab.lowercase:
        # sentence-transformers lower-cases the text itself before tokenizing.
        vocab = dataclasses.replace(vocab, lowercase=True)
    return Checkpoint(
        source=source,
        weight_files=_weight_files(model_dir),
        tokenizer_file=tokenizer_file,
        hparams=hparams,
        vocab=vocab,
        pooling=modules.pooling,
        normalize=modules.normalize,
        max_seq_length=max_seq if isinstance(max_seq, int) and max_seq > 0 else None,
    )


@dataclass(frozen=True)
class _Modules:
    transformer_path: str
    pooling: str
    pooling_type: int
    normalize: bool


def _read_modules(source: Path) -> _Modules:
    """The module pipeline of modules.json; a plain encoder (no modules.json) is mean-pooled."""
    modules = _read_json(source / "modules.json", kind=list)
    if modules is None:
        return _Modules("", "mean", 1, normalize=False)
    transformer, pooling, pooling_type, normalize = "", "mean", 1, False
    for module in modules:
        if not isinstance(module, dict) or not isinstance(module.get("type"), str):
            raise CheckpointError(f"{source / 'modules.json'}: an entry has no type")
        kind = module["type"].removeprefix(_MODULE)
        path = str(module.get("path") or "")
        if kind == "Transformer":
            transformer = path
        elif kind == "Pooling":
            pooling, pooling_type = _read_pooling(source / path / "config.json")
        elif kind == "Normalize":
            normalize = True
        else:
            raise CheckpointError(
                f"{source}: unsupported sentence-transformers module {module['type']!r} "
                "(only Transformer, Pooling and Normalize can be converted)"
            )
    return _Modules(transformer, pooling, pooling_type, normalize)


def _read_pooling(path: Path) -> tuple[str, int]:
    """(name, GGUF pooling type) of a Pooling module's config; mean when it has none."""
    config = _read_json(path)
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


def _hparams(model_dir: Path, config: dict[str, Any], pooling_type: int) -> BertHParams:
    where = model_dir / "config.json"
    model_type = config.get("model_type")
    if model_type != "bert":
        raise CheckpointError(
            f"{where}: unsupported model_type {model_type!r}; only 'bert' encoders "
            "(WordPiece vocabulary, absolute positions) can be imported"
        )
    position = config.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise CheckpointError(f"{where}: unsupported position_embedding_type {position!r}")
    act = config.get("hidden_act", "gelu")
    if act not in _GELU:
        raise CheckpointError(f"{where}: unsupported hidden_act {act!r} (llama.cpp uses GELU)")
    eps = config.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool):
        raise CheckpointError(f"{where}: layer_norm_eps is not a number")
    try:
        return BertHParams(
            context_length=_int(config, "max_position_embeddings", where),
            embedding_length=_int(config, "hidden_size", where),
            block_count=_int(config, "num_hidden_layers", where),
            feed_forward_length=_int(config, "intermediate_size", where),
            head_count=_int(config, "num_attention_heads", where),
            layer_norm_epsilon=float(eps),
            pooling=pooling_type,
        )
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


def _weight_files(model_dir: Path) -> tuple[Path, ...]:
    single = model_dir / "model.safetensors"
    if single.is_file():
        return (single,)
    index = _read_json(model_dir / "model.safetensors.index.json")
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


# -- the vocabulary


def _read_vocab(model_dir: Path, vocab_size: int) -> tuple[WordPieceVocab, Path]:
    """The WordPiece vocabulary, its special tokens and normalisation; and the file read."""
    tok_config = _read_json(model_dir / "tokenizer_config.json") or {}
    special_map = _read_json(model_dir / "special_tokens_map.json") or {}
    tokenizer_json = _read_json(model_dir / "tokenizer.json")
    extra_control: set[int] = set()
    normalizer = _Normalizer()
    if tokenizer_json is not None:
        file = model_dir / "tokenizer.json"
        tokens, extra_control, normalizer = _tokenizer_json_vocab(file, tokenizer_json)
    elif (model_dir / "vocab.txt").is_file():
        file = model_dir / "vocab.txt"
        tokens = file.read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
    else:
        raise CheckpointError(f"{model_dir}: no tokenizer.json or vocab.txt")
    ids = {token: i for i, token in enumerate(tokens)}
    for key, value in (tok_config.get("added_tokens_decoder") or {}).items():
        if isinstance(value, dict) and value.get("special") and str(key).isdigit():
            extra_control.add(int(key))
    texts = {
        role: _token_text(tok_config.get(f"{role}_token"))
        or _token_text(special_map.get(f"{role}_token"))
        or default
        for role, default in _SPECIAL.items()
    }
    absent = [f"{role} {text!r}" for role, text in texts.items() if text not in ids]
    # A vocabulary without a mask token never needs one for embedding.
    if any(not a.startswith("mask ") for a in absent):
        raise CheckpointError(f"{file}: special tokens not in the vocabulary: {', '.join(absent)}")
    special = {role: ids[text] for role, text in texts.items() if text in ids}
    special.setdefault("mask", special["unk"])
    if len(tokens) > vocab_size:
        raise CheckpointError(
            f"{file}: {len(tokens)} tokens, more than config.json's vocab_size {vocab_size}"
        )
    # Embedding rows beyond the vocabulary get placeholder control tokens.
    extra_control |= set(range(len(tokens), vocab_size))
    tokens = tokens + [f"[PAD{i}]" for i in range(len(tokens), vocab_size)]
    lowercase, strip = _normalization(tok_config, normalizer)
    try:
        vocab = WordPieceVocab(
            tokens=tuple(tokens),
            cls_id=special["cls"],
            sep_id=special["sep"],
            pad_id=special["pad"],
            unk_id=special["unk"],
            mask_id=special["mask"],
            lowercase=lowercase,
            strip_accents=strip,
            extra_control_ids=frozenset(i for i in extra_control if 0 <= i < len(tokens)),
        )
    except ValueError as exc:
        raise CheckpointError(f"{file}: {exc}") from exc
    return vocab, file


def _tokenizer_json_vocab(
    file: Path, data: dict[str, Any]
) -> tuple[list[str], set[int], _Normalizer]:
    """Tokens by id, ids of special added tokens, and the normalizer of a tokenizer.json."""
    model = data.get("model")
    if not isinstance(model, dict) or model.get("type") != "WordPiece":
        kind = model.get("type") if isinstance(model, dict) else None
        raise CheckpointError(f"{file}: unsupported tokenizer model {kind!r}; need WordPiece")
    if model.get("continuing_subword_prefix", "##") != "##":
        raise CheckpointError(f"{file}: continuing_subword_prefix must be '##'")
    by_id: dict[int, str] = {}
    for token, i in (model.get("vocab") or {}).items():
        by_id[int(i)] = token
    special: set[int] = set()
    for added in data.get("added_tokens") or []:
        if isinstance(added, dict) and isinstance(added.get("id"), int):
            by_id.setdefault(added["id"], str(added.get("content", "")))
            if added.get("special"):
                special.add(added["id"])
    if sorted(by_id) != list(range(len(by_id))):
        raise CheckpointError(f"{file}: token ids are not 0..{len(by_id) - 1} without gaps")
    normalizer = data.get("normalizer")
    return [by_id[i] for i in range(len(by_id))], special, _read_normalizer(normalizer)


@dataclass(frozen=True)
class _Normalizer:
    """What a tokenizer.json normalizer does about case and accents; None: not said."""

    lowercase: bool | None = None
    strip_accents: bool | None = None


def _read_normalizer(normalizer: object) -> _Normalizer:
    """The case and accent settings of a tokenizer.json normalizer."""
    if not isinstance(normalizer, dict):
        return _Normalizer()
    kind = normalizer.get("type")
    if kind == "BertNormalizer":
        strip = normalizer.get("strip_accents")
        return _Normalizer(
            lowercase=bool(normalizer.get("lowercase", True)),
            strip_accents=strip if isinstance(strip, bool) else None,
        )
    if kind == "Lowercase":
        return _Normalizer(lowercase=True)
    if kind == "StripAccents":
        return _Normalizer(strip_accents=True)
    if kind == "Sequence":
        lowercase, strip = None, None
        for inner in normalizer.get("normalizers") or []:
            found = _read_normalizer(inner)
            lowercase = lowercase or found.lowercase
            strip = strip or found.strip_accents
        return _Normalizer(lowercase, strip)
    return _Normalizer()


def _normalization(tok_config: dict[str, Any], normalizer: _Normalizer) -> tuple[bool, bool | None]:
    """(lowercase, strip_accents): tokenizer_config.json wins, as transformers applies it.

    BertTokenizer lower-cases unless told otherwise.
    """
    lowercase = tok_config.get("do_lower_case", normalizer.lowercase)
    strip = tok_config.get("strip_accents", normalizer.strip_accents)
    return lowercase is not False, strip if isinstance(strip, bool) else None


def _token_text(value: object) -> str | None:
    """A special token as tokenizer configs spell it: a string or {"content": ...}."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"]) or None
    return None


# -- the weights


@contextlib.contextmanager
def open_weights(files: tuple[Path, ...]) -> Iterator[Mapping[str, npt.NDArray[np.floating]]]:
    """The tensors of safetensors `files` as a mapping that reads each on access."""
    with contextlib.ExitStack() as stack:
        tensors = _LazyTensors()
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

    def __init__(self) -> None:
        self._where: dict[str, tuple[Path, Any]] = {}
        self._dtypes: dict[str, str] = {}
        self._headers: dict[Path, tuple[int, dict[str, Any]]] = {}

    def add(self, path: Path, handle: Any) -> None:
        names: list[str] = handle.keys()
        for name in names:
            if name in self._where:
                raise CheckpointError(f"{path}: tensor {name!r} is also in {self._where[name][0]}")
            dtype = str(handle.get_slice(name).get_dtype())
            if dtype not in _FLOAT_DTYPES and _is_weight(name):
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


def _is_weight(name: str) -> bool:
    """True for tensors that go into the GGUF (unknown names are reported later)."""
    try:
        return gguf_tensor_name(name) is not None
    except ValueError:
        return False


def _safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(offset of the data, header) of a safetensors file: a u64 length, then JSON."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return 8 + length, header


# -- JSON files


def _read_json(path: Path, *, required: bool = False, kind: type = dict) -> Any:
    """The JSON object (or `kind`) in `path`; None when absent and not required."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise CheckpointError(f"{path.parent}: no {path.name}") from None
        return None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: expected a JSON {kind.__name__}")
    return value


def _int(config: dict[str, Any], key: str, where: Path) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CheckpointError(f"{where}: {key} is missing or not an integer")
    return value
