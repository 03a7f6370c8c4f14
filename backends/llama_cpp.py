"""The llama.cpp backend: the only module that imports llama_cpp.

It drives llama.cpp's C API directly rather than through `llama_cpp.Llama`,
because embedding needs control that class does not give: context sizes that
never abort an encoder, our own truncation, and batches filled from numpy
arrays instead of Python loops over tokens.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

# On macOS 15+ llama.cpp's Metal device starts a thread that wakes every 5 ms
# for the life of the process, to keep its memory wired between decodes: an
# idle laptop would never sleep. Without it macOS may page a model's memory
# out while the server is idle, which the next decode pays for once.
if sys.platform == "darwin":
    os.environ.setdefault("GGML_METAL_NO_RESIDENCY", "1")

import llama_cpp as lc  # after the environment it reads when it loads
from llama_cpp._ggml import libggml

from emberd.backends.base import (
    BackendError,
    DecodeStats,
    FloatMatrix,
    LoadOptions,
    ModelFacts,
    ModelLoadError,
    NonFiniteOnGpu,
    Pooling,
)
from emberd.backends.cpu_load import CpuLoad
from emberd.backends.devices import (
    MAX_SEQUENCES,
    Compute,
    Device,
    LoadPlan,
    ModelSize,
    fewer_layers,
    plan_load,
)
from emberd.models.errors import ModelError
from emberd.models.gguf_meta import GGUFInfo, read_gguf_info

log = logging.getLogger("emberd.llama")

# Offloading more layers than a model has means "all of them", its output
# (classifier) layer included.
ALL_LAYERS = 999


# Contexts a CPU model decodes on side by side. Two decodes of one thread each
# beat one decode of two threads: ggml's threads meet at a barrier after
# every operation, and the small ones (norms, adds, GELU) barely split.
CPU_LANES = 2

# ggml numbers its levels 1 debug, 2 info, 3 warn, 4 error, 5 continuation.
_GGML_LEVELS = {3: logging.WARNING, 4: logging.ERROR}
_GGML_INFO, _GGML_CONT = 2, 5
# llama.cpp's info lines that say what computes and where the layers went
# ("using device CUDA0 (NVIDIA H200) ...", "offloaded 12/13 layers to GPU",
# "ggml_cuda_init: found 1 CUDA devices"): the rest of its info is noise.
_DEVICE_LINE = re.compile(
    r"using device|offload|found \d+ \w+ devices|Device \d+:|GPU name|"
    r"recommendedMaxWorkingSetSize|has unified memory|failed to allocate|out of memory",
    re.IGNORECASE,
)
_last_level = [0]


@lc.llama_log_callback
def _log_callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    # A continuation line carries on the level of the line before it.
    if level == _GGML_CONT:
        level = _last_level[0]
    _last_level[0] = level
    line = text.decode("utf-8", "replace").rstrip()
    py_level = _GGML_LEVELS.get(level)
    if py_level is None and level == _GGML_INFO and _DEVICE_LINE.search(line):
        py_level = logging.INFO
    if py_level is not None and line and log.isEnabledFor(py_level):
        log.log(py_level, "%s", line)


@functools.cache
def _init_llama() -> None:
    lc.llama_log_set(_log_callback, ctypes.c_void_p(0))
    lc.llama_backend_init()


# ggml's backend device API (ggml-backend.h), which llama_cpp does not bind.
_dev_t = ctypes.c_void_p
_GGML_FUNCTIONS: dict[str, tuple[list[type], type | None]] = {
    "ggml_backend_dev_count": ([], ctypes.c_size_t),
    "ggml_backend_dev_get": ([ctypes.c_size_t], _dev_t),
    "ggml_backend_dev_name": ([_dev_t], ctypes.c_char_p),
    "ggml_backend_dev_description": ([_dev_t], ctypes.c_char_p),
    "ggml_backend_dev_type": ([_dev_t], ctypes.c_int),
    "ggml_backend_dev_memory": (
        [_dev_t, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)],
        None,
    ),
    "ggml_backend_dev_backend_reg": ([_dev_t], ctypes.c_void_p),
    "ggml_backend_reg_name": ([ctypes.c_void_p], ctypes.c_char_p),
    "ggml_backend_reg_count": ([], ctypes.c_size_t),
    "ggml_backend_reg_get": ([ctypes.c_size_t], ctypes.c_void_p),
}
# enum ggml_backend_dev_type
_DEV_CPU, _DEV_GPU, _DEV_IGPU = 0, 1, 2
# Backends that are not GPUs: the CPU itself and its helpers (BLAS, AMX), and
# remote devices, which emberd does not place models on.
_NOT_GPU_BACKENDS = {"CPU", "BLAS", "AMX", "RPC"}


@functools.cache
def _ggml() -> ctypes.CDLL:
    _init_llama()
    for name, (argtypes, restype) in _GGML_FUNCTIONS.items():
        function = getattr(libggml, name)
        function.argtypes = argtypes
        function.restype = restype
    return libggml


def _gpu_handles() -> list[tuple[int, Device]]:
    """llama.cpp's GPUs, as its default selection orders them: discrete ones,
    else integrated ones; each with its device handle."""
    ggml = _ggml()
    discrete: list[tuple[int, Device]] = []
    integrated: list[tuple[int, Device]] = []
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        kind = ggml.ggml_backend_dev_type(dev)
        backend = ggml.ggml_backend_reg_name(ggml.ggml_backend_dev_backend_reg(dev)).decode()
        if kind not in (_DEV_GPU, _DEV_IGPU) or backend in _NOT_GPU_BACKENDS:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        ggml.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        device = Device(
            name=ggml.ggml_backend_dev_name(dev).decode("utf-8", "replace"),
            backend=backend,
            description=ggml.ggml_backend_dev_description(dev).decode("utf-8", "replace"),
            free=int(free.value),
            total=int(total.value),
            unified=kind == _DEV_IGPU or backend == "Metal",
        )
        (discrete if kind == _DEV_GPU else integrated).append((dev, device))
    return discrete or integrated


def compute_devices() -> Compute:
    """This machine's GPUs as this build sees them, with their free memory now."""
    ggml = _ggml()
    backends = []
    for i in range(ggml.ggml_backend_reg_count()):
        name = ggml.ggml_backend_reg_name(ggml.ggml_backend_reg_get(i)).decode()
        if name not in _NOT_GPU_BACKENDS:
            backends.append(name)
    return Compute(gpus=tuple(device for _, device in _gpu_handles()), gpu_backends=tuple(backends))


def _handle(handles: dict[int, Device], gpu: Device) -> int:
    """The device handle of `gpu`, found again by its name."""
    for dev, device in handles.items():
        if device.name == gpu.name:
            return dev
    raise ModelLoadError(f"GPU {gpu.name} is gone")


def gpu_offload_supported() -> bool:
    """Whether llama.cpp can put layers on a GPU here: a GPU build that found one.

    A CUDA build on a machine without a GPU (or its driver) answers False.
    """
    _init_llama()
    return bool(lc.llama_supports_gpu_offload())


def gpu_device_limit() -> int:
    """How many GPUs a `main_gpu` may choose among: the GPUs found; 0 without any."""
    return len(compute_devices().gpus)


class LlamaCppBackend:
    """Loads GGUF embedding models with llama.cpp."""

    def __init__(self, cpu_load: CpuLoad | None = None) -> None:
        """`cpu_load` watches the machine for all models; None gives every decode all threads."""
        self._cpu_load = cpu_load

    def load(self, path: Path, options: LoadOptions) -> LlamaCppModel:
        """Load `path` in embedding mode; raises ModelLoadError on failure."""
        return LlamaCppModel(path, options, self._cpu_load)


class _Batch:
    """A llama_batch whose arrays are numpy buffers, so filling it is vectorised."""

    def __init__(self, capacity: int) -> None:
        self.tokens = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq_ids = np.zeros(capacity, dtype=np.int32)
        # seq_id is an array of pointers, one per token, each to that token's id.
        self.seq_ptrs = self.seq_ids.ctypes.data + 4 * np.arange(capacity, dtype=np.uintp)
        self.outputs = np.ones(capacity, dtype=np.int8)
        self.positions = np.arange(capacity, dtype=np.int32)
        self.struct = lc.llama_batch(
            n_tokens=0,
            token=self.tokens.ctypes.data_as(ctypes.POINTER(lc.llama_token)),
            embd=None,
            pos=self.pos.ctypes.data_as(ctypes.POINTER(lc.llama_pos)),
            n_seq_id=self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=ctypes.cast(
                self.seq_ptrs.ctypes.data, ctypes.POINTER(ctypes.POINTER(lc.llama_seq_id))
            ),
            logits=self.outputs.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    def fill(self, sequences: Sequence[Sequence[int]]) -> int:
        if len(sequences) == 1:  # a lone text: three copies, no index arithmetic
            (only,) = sequences
            total = len(only)
            self.tokens[:total] = only
            self.pos[:total] = self.positions[:total]
            self.seq_ids[:total] = 0
        else:
            lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
            total = int(lengths.sum())
            starts = np.cumsum(lengths) - lengths
            self.tokens[:total] = np.concatenate([np.asarray(s, np.int32) for s in sequences])
            self.pos[:total] = self.positions[:total] - np.repeat(starts, lengths)
            self.seq_ids[:total] = np.repeat(np.arange(len(sequences), dtype=np.int32), lengths)
        self.struct.n_tokens = total
        return total


class _Lane:
    """One llama context with its batch arrays: the unit that runs one decode."""

    def __init__(self, ctx: lc.llama_context_p, capacity: int, threads: int) -> None:
        self.ctx = ctx
        self.batch = _Batch(capacity)
        self.threads = threads

    def use_threads(self, threads: int) -> None:
        if threads != self.threads:
            lc.llama_set_n_threads(self.ctx, threads, threads)
            self.threads = threads


def split_threads(threads: int, ways: int) -> list[int]:
    """`threads` shared out among `ways` decodes as evenly as can be, at least one each."""
    return [max(1, threads // ways + (1 if i < threads % ways else 0)) for i in range(ways)]


class LlamaCppModel:
    """One GGUF loaded in embedding mode, with its own llama contexts (lanes).

    A model on the CPU gets CPU_LANES contexts over the same weights, so that
    when there is work for several decodes they run side by side with the
    threads shared out; a single decode gets every thread.
    """

    def __init__(
        self,
        path: Path,
        options: LoadOptions,
        cpu_load: CpuLoad | None = None,
        label: str | None = None,
    ) -> None:
        """`label` names the model in messages (default: the file's name)."""
        _init_llama()
        self.path = path
        self.label = label or path.name
        self.options = options
        self._cpu_load = cpu_load
        self.stats = DecodeStats()
        self._closed = False
        self._lock = threading.Lock()
        self._lanes: list[_Lane] = []
        self._pool: ThreadPoolExecutor | None = None
        self._model: lc.llama_model_p | None = None
        try:
            pooling = self._pooling()
            self.plan = self._place(pooling)
            if not self.plan.on_cpu:  # the GPU does the work; the CPU threads barely matter
                self._cpu_load = None
            n_ctx_train = lc.llama_model_n_ctx_train(self._model)
            lanes = len(self._lanes)
            if lanes > 1:
                self._pool = ThreadPoolExecutor(lanes - 1, thread_name_prefix="emberd-lane")
            prefix, suffix = self._special_affixes()
            self.facts = ModelFacts(
                n_embd=lc.llama_model_n_embd(self._model),
                n_ctx_train=n_ctx_train,
                n_vocab=lc.llama_vocab_n_tokens(self._vocab),
                pooling=pooling,
                prefix=prefix,
                suffix=suffix,
                gpu_layers=self.plan.gpu_layers,
                n_layers=lc.llama_model_n_layer(self._model),
                decode_budget=self.plan.decode_budget,
                n_cls_out=lc.llama_model_n_cls_out(self._model) if pooling == Pooling.RANK else 0,
                pair_separator=self._pair_separator(),
                rerank_template=self._rerank_template() if pooling == Pooling.RANK else None,
            )
            self._encoder_only = bool(
                lc.llama_model_has_encoder(self._model)
                and not lc.llama_model_has_decoder(self._model)
            )
        except BaseException:
            self.close()
            raise

    # -- loading -----------------------------------------------------------

    def _place(self, pooling: Pooling) -> LoadPlan:
        """Load the weights and contexts where the plan says; fewer GPU layers on failure.

        A GPU that cannot hold what its free memory promised (other programs
        allocate meanwhile, compute buffers are larger than estimated) makes
        llama.cpp fail the load or the context: the next try halves the
        layers, down to the CPU alone, as Ollama's scheduler does.
        """
        options = self.options
        info = self._gguf_info()
        size = ModelSize(self.path.stat().st_size, info.block_count, info.layer_bytes)
        wants_gpu = options.num_gpu != 0 and gpu_offload_supported()
        compute = compute_devices() if wants_gpu else Compute()
        plan = plan_load(compute, size, options, info.context_length)
        while True:
            handles = dict(_gpu_handles()) if plan.gpus else {}
            try:
                self._model = self._load_model(plan, [_handle(handles, gpu) for gpu in plan.gpus])
                self._vocab = lc.llama_model_get_vocab(self._model)
                self._ubatch = plan.context_tokens
                self._n_seq_max = min(self._ubatch, MAX_SEQUENCES)
                cpu = plan.on_cpu and options.num_thread >= CPU_LANES
                for _ in range(CPU_LANES if cpu else 1):
                    ctx = self._new_context(pooling, plan.op_offload)
                    self._lanes.append(_Lane(ctx, self._ubatch, options.num_thread))
            except ModelLoadError as exc:
                retry = fewer_layers(plan, compute, size, options, info.context_length)
                if retry is None:
                    raise
                log.warning(
                    "%s on %s: %s; trying %s",
                    self.label,
                    plan.describe(),
                    exc,
                    retry.describe(),
                )
                self._free()
                plan = retry
                continue
            log.info("%s runs on %s", self.label, plan.describe())
            return plan

    def _gguf_info(self) -> GGUFInfo:
        try:
            return read_gguf_info(self.path)
        except ModelError as exc:
            raise ModelLoadError(str(exc)) from exc

    def _load_model(self, plan: LoadPlan, devices: list[int]) -> lc.llama_model_p:
        options = self.options
        params = lc.llama_model_default_params()
        # The model's devices, NULL-terminated; empty is the CPU alone. llama.cpp
        # copies the list while loading, so it need only outlive this call.
        chosen = (ctypes.c_void_p * (len(devices) + 1))(*devices, None)
        params.devices = ctypes.cast(chosen, ctypes.c_void_p)
        params.split_mode = int(plan.split_mode)
        # -1 with split mode NONE is llama.cpp's "no GPU at all".
        params.main_gpu = -1 if plan.on_cpu else plan.main_gpu
        # Every block on the GPU counts the output (classifier) layer in too.
        n_layers = self._gguf_info().block_count
        params.n_gpu_layers = ALL_LAYERS if plan.gpu_layers >= n_layers > 0 else plan.gpu_layers
        mode = {
            (True, True): lc.LLAMA_LOAD_MODE_MMAP_MLOCK,
            (False, True): lc.LLAMA_LOAD_MODE_MLOCK,
            (True, False): lc.LLAMA_LOAD_MODE_MMAP,
            (False, False): lc.LLAMA_LOAD_MODE_NONE,
        }[(options.use_mmap, options.use_mlock)]
        params.load_mode = mode
        model = lc.llama_model_load_from_file(str(self.path).encode(), params)
        if not model:
            raise ModelLoadError(f"llama.cpp could not load {self.label}")
        return model

    def _pooling(self) -> Pooling:
        info = self._gguf_info()
        # Rerankers often declare no pooling: their classifier head says what they are.
        if info.is_reranker:
            return Pooling.RANK
        raw = info.pooling_type
        declared = Pooling(raw) if raw in set(Pooling) else Pooling.NONE
        # A model that declares no pooling is pooled by mean, as Ollama does.
        return Pooling.MEAN if declared == Pooling.NONE else declared

    def _new_context(self, pooling: Pooling, op_offload: bool) -> lc.llama_context_p:
        params = lc.llama_context_default_params()
        params.n_ctx = self._ubatch
        params.n_batch = self._ubatch
        params.n_ubatch = self._ubatch
        params.n_seq_max = self._n_seq_max
        params.n_threads = self.options.num_thread
        params.n_threads_batch = self.options.num_thread
        params.embeddings = True
        params.pooling_type = int(pooling)
        params.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_AUTO
        # One KV pool shared by all sequences: a decoder's batch of many short
        # sequences must fit, not n_ctx / n_seq_max cells each.
        params.kv_unified = True
        params.no_perf = True
        # Off on the CPU alone: it would still send large matrix products to a GPU.
        params.op_offload = op_offload
        ctx = lc.llama_init_from_model(self._model, params)
        if not ctx:
            raise ModelLoadError(f"llama.cpp could not create a context for {self.label}")
        return ctx

    def _special_affixes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The special tokens the model puts before and after every text."""
        probe = "a"
        bare = self._tokenize(probe, add_special=False)
        full = self._tokenize(probe, add_special=True)
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return tuple(full[:start]), tuple(full[start + len(bare) :])
        raise ModelLoadError("could not find where the tokenizer puts its special tokens")

    def _pair_separator(self) -> tuple[int, ...]:
        """What goes between a pair's texts besides the first text's suffix.

        A SentencePiece-style vocabulary that adds a separator joins a pair
        with a second one (XLM-R: `<s> q </s></s> d </s>`, llama.cpp's own
        rerank format); for WordPiece the separator is already the suffix.
        """
        vocab = self._vocab
        wordpiece = lc.llama_vocab_type(vocab) == lc.LLAMA_VOCAB_TYPE_WPM
        sep = lc.llama_vocab_sep(vocab)
        if wordpiece or not lc.llama_vocab_get_add_sep(vocab) or sep < 0:
            return ()
        return (sep,)

    def _rerank_template(self) -> str | None:
        template = lc.llama_model_chat_template(self._model, b"rerank")
        return template.decode("utf-8", "replace") if template else None

    # -- LoadedModel -------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens (special text is parsed)."""
        return self._tokenize(text, add_special=False)

    def _tokenize(self, text: str, *, add_special: bool) -> list[int]:
        if self._closed:
            raise BackendError("model is closed")
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            buf = (lc.llama_token * capacity)()
            n = lc.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, True)
            if n >= 0:
                return buf[:n]
            capacity = -n

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of `tokens`, special tokens written out; bytes that end mid-character
        are dropped."""
        if self._closed:
            raise BackendError("model is closed")
        pieces = []
        buf = ctypes.create_string_buffer(256)
        for token in tokens:
            n = lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
            if n < 0:  # a piece longer than the buffer: -n is its length
                buf = ctypes.create_string_buffer(-n)
                n = lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
            pieces.append(buf.raw[: max(n, 0)])
        return b"".join(pieces).decode("utf-8", "ignore")

    def max_batch_tokens(self) -> int:
        """Most tokens one decode takes."""
        return self._ubatch

    def max_batch_sequences(self) -> int:
        """Most sequences one decode takes."""
        return self._n_seq_max

    def parallel_decodes(self) -> int:
        """How many decodes run side by side (one per lane)."""
        return len(self._lanes)

    def embed(self, sequences: Sequence[Sequence[int]]) -> FloatMatrix:
        """Pooled vectors of `sequences`, decoded together in one llama.cpp call."""
        (result,) = self.embed_parallel([sequences])
        if isinstance(result, BackendError):
            raise result
        return result

    def embed_parallel(
        self, batches: Sequence[Sequence[Sequence[int]]]
    ) -> list[FloatMatrix | BackendError]:
        """One decode per batch, on lanes side by side, the threads shared among them."""
        if len(batches) > len(self._lanes):
            raise BackendError(f"{len(batches)} batches for {len(self._lanes)} lanes")
        for sequences in batches:
            self._check_fits(sequences)
        with self._lock:
            if self._closed:
                raise BackendError("model is closed")
            threads = split_threads(self._threads_now(), len(batches))
            jobs = list(zip(self._lanes, batches, threads, strict=False))
            # The first decode runs on this thread, the others on the lane pool.
            others = [self._pool.submit(self._decode, *job) for job in jobs[1:] if self._pool]
            results = [self._decode(*job) for job in jobs[:1]]
            results += [future.result() for future in others]
            self.stats.count(batches)
        return results

    def _threads_now(self) -> int:
        """The threads this model may use now: all of them, unless other work needs cores."""
        wanted = self.options.num_thread
        return wanted if self._cpu_load is None else self._cpu_load.threads(wanted)

    def _decode(
        self, lane: _Lane, sequences: Sequence[Sequence[int]], threads: int
    ) -> FloatMatrix | BackendError:
        if not sequences:
            return np.zeros((0, self.facts.width), dtype=np.float32)
        lane.use_threads(threads)
        lane.batch.fill(sequences)
        run = lc.llama_encode if self._encoder_only else lc.llama_decode
        try:
            rc = run(lane.ctx, lane.batch.struct)
            if rc != 0:
                return BackendError(f"llama.cpp decode failed with code {rc}")
            out = self._read_pooled(lane.ctx, len(sequences))
            # NaN that only a GPU computes is the GPU's fault: say so, typed, so
            # that the runtime can move the model to the CPU and retry.
            if not self.plan.on_cpu and not np.isfinite(out).all():
                fault = NonFiniteOnGpu(
                    f"{self.label} computed NaN or Inf on {self.plan.describe()}"
                )
                log.warning("%s", fault)
                return fault
            return out
        except BackendError as exc:
            return exc
        finally:
            self._clear_memory(lane.ctx)

    def _check_fits(self, sequences: Sequence[Sequence[int]]) -> None:
        # Each of these would be a C assert (a process abort) inside llama.cpp.
        if not sequences:
            return
        lengths = [len(s) for s in sequences]
        total = sum(lengths)
        if total > self._ubatch or len(sequences) > self._n_seq_max:
            raise BackendError(
                f"batch of {len(sequences)} sequences / {total} tokens exceeds "
                f"{self._n_seq_max} / {self._ubatch}"
            )
        if min(lengths) == 0:
            raise BackendError("cannot embed an empty token sequence")
        # Positions past the trained context index outside the position table.
        if max(lengths) > self.facts.n_ctx_train:
            raise BackendError(
                f"a sequence of {max(lengths)} tokens exceeds the model's context "
                f"of {self.facts.n_ctx_train}"
            )

    def _read_pooled(self, ctx: lc.llama_context_p, count: int) -> FloatMatrix:
        width = self.facts.width  # n_cls_out values per sequence with rank pooling
        out: npt.NDArray[np.float32] = np.empty((count, width), dtype=np.float32)
        row_bytes = 4 * width
        base = out.ctypes.data
        for seq in range(count):
            ptr = lc.llama_get_embeddings_seq(ctx, seq)
            if not ptr:
                raise BackendError("llama.cpp returned no pooled embedding")
            ctypes.memmove(base + seq * row_bytes, ptr, row_bytes)
        return out

    def _clear_memory(self, ctx: lc.llama_context_p) -> None:
        # Decoder models keep a KV cache between calls; each batch starts clean.
        if not self._encoder_only:
            mem = lc.llama_get_memory(ctx)
            if mem:
                lc.llama_memory_clear(mem, True)

    def close(self) -> None:
        """Free the context and the weights; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._free()

    def _free(self) -> None:
        for lane in self._lanes:
            lc.llama_free(lane.ctx)
        self._lanes = []
        if self._model:
            lc.llama_model_free(self._model)
        self._model = None
