"""Ollama's `options`: which keys exist, their types, and the load options they make.

Load options (`num_ctx`, `num_batch`, ...) decide how a model is loaded and so
whether a loaded instance can serve a request. Every other known option is
accepted and ignored, as embedding has no use for sampling settings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from emberd.backends.base import LoadOptions
from emberd.server.core.errors import InvalidOption

log = logging.getLogger("emberd.options")

_INT, _FLOAT, _BOOL, _STRINGS = "integer", "float32", "boolean", "strings"

LOAD_KEYS: dict[str, str] = {
    "num_ctx": _INT,
    "num_batch": _INT,
    "num_gpu": _INT,
    "main_gpu": _INT,
    "use_mmap": _BOOL,
    "use_mlock": _BOOL,
    "num_thread": _INT,
}

# Options Ollama knows that do not change how an embedding model is loaded.
IGNORED_KEYS: dict[str, str] = {
    "numa": _BOOL,
    "low_vram": _BOOL,
    "f16_kv": _BOOL,
    "logits_all": _BOOL,
    "vocab_only": _BOOL,
    "penalize_newline": _BOOL,
    "num_keep": _INT,
    "seed": _INT,
    "num_predict": _INT,
    "top_k": _INT,
    "repeat_last_n": _INT,
    "mirostat": _INT,
    "top_p": _FLOAT,
    "min_p": _FLOAT,
    "typical_p": _FLOAT,
    "temperature": _FLOAT,
    "repeat_penalty": _FLOAT,
    "presence_penalty": _FLOAT,
    "frequency_penalty": _FLOAT,
    "mirostat_tau": _FLOAT,
    "mirostat_eta": _FLOAT,
    "tfs_z": _FLOAT,
    "stop": _STRINGS,
}


def _check_type(key: str, kind: str, value: object) -> object:
    """Validate like Ollama: JSON numbers fit int fields (truncated), bools are strict."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind == _INT:
            return int(value)
        if kind == _FLOAT:
            return float(value)
    if kind == _BOOL and isinstance(value, bool):
        return value
    if kind == _STRINGS and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if kind == _STRINGS:
        raise InvalidOption(f'option "{key}" must be of an array of strings')
    raise InvalidOption(f'option "{key}" must be of type {kind}')


def load_overrides(options: Mapping[str, object] | None) -> dict[str, object]:
    """The load options named in `options`, validated; nulls mean unset.

    Raises InvalidOption for a wrong type; unknown keys are logged and dropped.
    """
    chosen: dict[str, object] = {}
    for key, value in (options or {}).items():
        if value is None:
            continue
        kind = LOAD_KEYS.get(key) or IGNORED_KEYS.get(key)
        if kind is None:
            log.warning("invalid option provided: %s", key)
            continue
        checked = _check_type(key, kind, value)
        if key in LOAD_KEYS:
            chosen[key] = checked
    return chosen


def model_defaults(params: Mapping[str, object]) -> dict[str, object]:
    """Load options from a model's params layer; a bad value there is logged and skipped."""
    chosen: dict[str, object] = {}
    for key, value in params.items():
        if key in LOAD_KEYS and value is not None:
            try:
                chosen[key] = _check_type(key, LOAD_KEYS[key], value)
            except InvalidOption as exc:
                log.warning("model parameter ignored: %s", exc.message)
    return chosen


@dataclass(frozen=True)
class ServerDefaults:
    """Defaults that come from the server's settings and machine."""

    context_length: int
    num_thread: int
    gpu_devices: int = 0  # GPUs a main_gpu may choose among; 0 on a CPU-only build
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def max_threads(self) -> int:
        """The most threads a model may ask for: a small multiple of the cores.

        More only thrashes, and far more fails inside the OpenMP runtime,
        which aborts the process.
        """
        return THREADS_PER_CORE * self.cpu_count


# A request may ask for up to this many threads per core.
THREADS_PER_CORE = 4
# Offloading this many layers means all of them; llama.cpp keeps the count in an int32.
MAX_GPU_LAYERS = 999
# No context, batch or layer count ever needs more; larger values are mistakes.
_MAX_SIZE = 1 << 24


def _in_range(key: str, value: int, low: int, high: int, why: str = "") -> int:
    """`value` if `low <= value <= high`, else a 400 naming the option."""
    if not low <= value <= high:
        raise InvalidOption(f'option "{key}" must be between {low} and {high}{why}, got {value}')
    return value


def _bounds(defaults: ServerDefaults) -> dict[str, tuple[int, int, str]]:
    """Each bounded load option's (lowest, highest, why) on this machine."""
    cores = f" ({THREADS_PER_CORE} per core on this machine)"
    return {
        "num_ctx": (0, _MAX_SIZE, ""),
        "num_batch": (0, _MAX_SIZE, ""),
        "num_thread": (-1, defaults.max_threads, cores),
        "main_gpu": (0, max(1, defaults.gpu_devices) - 1, ""),
    }


def _bounded_model_defaults(
    defaults: ServerDefaults, model_params: Mapping[str, object]
) -> dict[str, object]:
    """The params layer's load options, each clamped into its bounds with a warning.

    They are the model's defaults, not the client's words: a value this
    machine cannot honour (`num_thread: 64` on a laptop) must not turn every
    request into a 400 naming an option the client never sent.
    """
    chosen = model_defaults(model_params)
    for key, (low, high, _) in _bounds(defaults).items():
        value = chosen.get(key)
        if isinstance(value, int) and not low <= value <= high:
            clamped = min(max(value, low), high)
            log.warning(
                "model parameter %s %d is outside %d..%d on this machine: using %d",
                key, value, low, high, clamped,
            )  # fmt: skip
            chosen[key] = clamped
    return chosen


def resolve_load_options(
    defaults: ServerDefaults,
    model_params: Mapping[str, object],
    request: Mapping[str, object],
    n_ctx_train: int,
) -> LoadOptions:
    """Settings, then the model's params layer (clamped), then the request; clamped to the model.

    Only what the request itself asks for can be a 400.
    """
    merged: dict[str, object] = {**_bounded_model_defaults(defaults, model_params), **request}
    bounds = _bounds(defaults)

    def pick(key: str, default: int) -> int:
        value = merged.get(key, default)
        if not isinstance(value, int):
            value = default
        low, high, why = bounds.get(key, (value, value, ""))
        return _in_range(key, value, low, high, why)

    num_ctx = pick("num_ctx", defaults.context_length)
    num_ctx = max(1, min(num_ctx, n_ctx_train)) if n_ctx_train > 0 else max(1, num_ctx)
    num_batch = pick("num_batch", min(2048, num_ctx))
    num_gpu = pick("num_gpu", -1 if defaults.gpu_devices else 0)
    num_thread = pick("num_thread", 0)
    return LoadOptions(
        num_ctx=num_ctx,
        num_batch=max(1, min(num_batch, num_ctx)),
        num_gpu=-1 if num_gpu < 0 else min(num_gpu, MAX_GPU_LAYERS),
        main_gpu=pick("main_gpu", 0),
        # Read into memory by default: a mapped file rewritten while loaded
        # would crash the process (SIGBUS) or feed the model garbage.
        use_mmap=merged.get("use_mmap", False) is True,
        use_mlock=merged.get("use_mlock", False) is True,
        num_thread=num_thread if num_thread > 0 else defaults.num_thread,
    )
