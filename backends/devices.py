"""What computes, and where a model goes: the offload decisions in one pure function.

The llama.cpp backend describes the machine's compute devices (a
:class:`Compute`) and the model about to load (a :class:`ModelSize`);
:func:`plan_load` turns those and the load options into a :class:`LoadPlan`:
which GPUs the model gets, how many layers go there, how they are split, and
how many tokens one decode carries. Nothing here touches llama.cpp, so every
decision is tested with described devices (an Apple GPU with unified memory,
one or two CUDA cards, a card too small, none).

The rules, after Ollama's:

- ``num_gpu: 0`` is the CPU alone: no GPU device is given to the model and
  llama.cpp's op offload (which would still send large matrix products to a
  GPU) is off.
- ``main_gpu`` counts the real GPUs. A model that fits on that one GPU goes
  there whole (split mode NONE); only one that does not is spread by layer
  over every GPU.
- With ``num_gpu`` unset, the layers that go to the GPU are those that fit in
  its free memory; after an allocation failure the backend asks for a plan
  with fewer (:func:`fewer_layers`), down to the CPU alone.
- A GPU decode carries ``num_batch`` tokens (a size llama.cpp accepts, at
  least the longest sequence); a CPU decode keeps the server's budget, tuned
  for a few cores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

from emberd.backends.base import LoadOptions, ModelLoadError

# llama.cpp keeps at most this many sequences in one context.
MAX_SEQUENCES = 256
# Kept free on a GPU beside the weights: the runtime's own context, the
# compute buffers of a decode and what other programs allocate meanwhile. An
# estimate; an allocation that fails anyway costs a retry with fewer layers.
GPU_RESERVE_BYTES = 512 << 20
# Compute buffers grow with the square of a decode's tokens (attention
# scores); bytes per token squared, an upper estimate for embedding models.
ATTENTION_BYTES_PER_TOKEN_PAIR = 16
_MIB = 1 << 20


class SplitMode(IntEnum):
    """How layers are shared among GPUs, numbered as llama.cpp's llama_split_mode."""

    NONE = 0  # the whole model on the main GPU
    LAYER = 1  # layers spread over the GPUs


@dataclass(frozen=True)
class Device:
    """One GPU (or other accelerator) that llama.cpp can put layers on."""

    name: str  # llama.cpp's name for it: "CUDA0", "Metal", "Vulkan1"
    backend: str  # the backend that drives it: "CUDA", "Metal", "Vulkan"
    description: str  # the hardware: "NVIDIA H200", "Apple M3 Pro"
    free: int  # bytes it can still allocate
    total: int  # bytes in all
    unified: bool = False  # shares the CPU's memory (Apple silicon, integrated GPUs)


@dataclass(frozen=True)
class Compute:
    """The compute devices of this machine as this llama.cpp build sees them."""

    gpus: tuple[Device, ...] = ()
    # GPU backends compiled into the build, whether or not they found a device.
    gpu_backends: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain data for a process that must not import llama.cpp."""
        return {
            "gpus": [vars(gpu).copy() for gpu in self.gpus],
            "gpu_backends": list(self.gpu_backends),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Compute:
        """The inverse of :meth:`as_dict`."""
        gpus = tuple(Device(**gpu) for gpu in data.get("gpus", ()))
        return cls(gpus=gpus, gpu_backends=tuple(data.get("gpu_backends", ())))


@dataclass(frozen=True)
class ModelSize:
    """What placing a model needs to know about its weights."""

    file_size: int  # bytes of the GGUF
    n_layers: int  # repeating blocks
    layer_bytes: int = 0  # bytes of all blocks' weights together; 0 if unknown

    @property
    def per_layer(self) -> int:
        """Bytes of one block (the whole file shared out when the blocks are unknown)."""
        if self.n_layers <= 0:
            return 0
        total = self.layer_bytes if self.layer_bytes > 0 else self.file_size
        return -(-total // self.n_layers)


@dataclass(frozen=True)
class LoadPlan:
    """Where a model goes and how it decodes there."""

    gpus: tuple[Device, ...]  # the devices given to the model; () is the CPU alone
    split_mode: SplitMode
    main_gpu: int  # index into `gpus`
    gpu_layers: int
    op_offload: bool  # let llama.cpp send host operations to a GPU
    context_tokens: int  # n_ctx = n_batch = n_ubatch of each context
    decode_budget: int | None  # tokens one decode carries; None: the server's (CPU) budget
    why: str  # one line for the log

    @property
    def on_cpu(self) -> bool:
        """Whether no layer runs on a GPU."""
        return self.gpu_layers == 0

    def describe(self) -> str:
        """Where the model runs, for the log: "CUDA0 (12/12 layers)", "CPU"."""
        if self.on_cpu:
            return f"CPU ({self.why})"
        names = "+".join(gpu.name for gpu in self.gpus)
        return f"{names} ({self.gpu_layers} layers, {self.why})"


def safe_batch_size(tokens: int) -> int:
    """A micro-batch size that llama.cpp accepts for any sequence count.

    Context creation aborts when n_ubatch is not a multiple of n_seq_max
    (which is min(n_ubatch, 256)): sizes up to 256, or multiples of 256, work.
    """
    if tokens <= MAX_SEQUENCES:
        return max(tokens, 1)
    return -(-tokens // MAX_SEQUENCES) * MAX_SEQUENCES


def sequence_cap(options: LoadOptions, n_ctx_train: int) -> int:
    """The longest sequence a decode must take: the context, within the model's."""
    return max(1, min(options.num_ctx, n_ctx_train) if n_ctx_train > 0 else options.num_ctx)


def cpu_plan(options: LoadOptions, n_ctx_train: int, why: str = "num_gpu 0") -> LoadPlan:
    """The model on the CPU alone: no GPU device, no op offload, the server's budget."""
    return LoadPlan(
        gpus=(),
        split_mode=SplitMode.NONE,
        main_gpu=0,
        gpu_layers=0,
        op_offload=False,
        context_tokens=safe_batch_size(sequence_cap(options, n_ctx_train)),
        decode_budget=None,
        why=why,
    )


def plan_load(
    compute: Compute,
    model: ModelSize,
    options: LoadOptions,
    n_ctx_train: int,
    max_layers: int | None = None,
) -> LoadPlan:
    """Where `model` goes on `compute` under `options`.

    `max_layers` caps the layers on GPUs (a retry after an allocation
    failure). Raises ModelLoadError when `main_gpu` names no GPU.
    """
    if options.num_gpu == 0:
        return cpu_plan(options, n_ctx_train)
    if not compute.gpus:
        return cpu_plan(options, n_ctx_train, "no GPU")
    if not 0 <= options.main_gpu < len(compute.gpus):
        raise ModelLoadError(
            f"main_gpu {options.main_gpu} is not one of this machine's {len(compute.gpus)} GPU(s)"
        )
    wanted = model.n_layers if options.num_gpu < 0 else min(options.num_gpu, model.n_layers)
    if max_layers is not None:
        wanted = min(wanted, max_layers)
    if wanted <= 0 or model.n_layers <= 0:
        return cpu_plan(options, n_ctx_train, "no layers to offload")
    context = safe_batch_size(max(sequence_cap(options, n_ctx_train), options.num_batch))
    budget = min(context, safe_batch_size(max(1, options.num_batch)))
    reserve = GPU_RESERVE_BYTES + ATTENTION_BYTES_PER_TOKEN_PAIR * context * context
    main = compute.gpus[options.main_gpu]
    others = [gpu for gpu in compute.gpus if gpu is not main]
    explicit = options.num_gpu > 0

    def fits(gpus: list[Device]) -> int:
        # Layers that fit in the free memory of `gpus`, each keeping its reserve.
        room = sum(max(0, gpu.free - reserve) for gpu in gpus)
        return room // model.per_layer if model.per_layer else model.n_layers

    def placed(gpus: list[Device], layers: int, why: str) -> LoadPlan:
        one = len(gpus) == 1
        return LoadPlan(
            gpus=tuple(gpus),
            split_mode=SplitMode.NONE if one else SplitMode.LAYER,
            main_gpu=gpus.index(main),
            gpu_layers=layers,
            op_offload=True,
            context_tokens=context,
            decode_budget=budget,
            why=why,
        )

    if fits([main]) >= wanted:
        return placed([main], wanted, "fits on one GPU")
    if others and fits([main, *others]) >= wanted:
        return placed([main, *others], wanted, "split by layer: too large for one GPU")
    if explicit:  # asked for by number: tried as asked; a failure retries with fewer
        gpus = [main, *others]
        return placed(gpus, wanted, f"num_gpu {options.num_gpu} asked for")
    on_main, on_all = fits([main]), fits([main, *others])
    if on_all <= 0:
        return cpu_plan(options, n_ctx_train, "too large for the GPU's free memory")
    if on_main >= on_all:
        return placed([main], on_main, "the layers that fit, the rest on the CPU")
    return placed([main, *others], on_all, "the layers that fit, the rest on the CPU")


def fewer_layers(
    plan: LoadPlan, compute: Compute, model: ModelSize, options: LoadOptions, n_ctx_train: int
) -> LoadPlan | None:
    """The plan to try after `plan` failed to allocate: half its GPU layers; None after the CPU."""
    if plan.on_cpu:
        return None
    layers = plan.gpu_layers // 2
    if layers == 0:
        return cpu_plan(options, n_ctx_train, "GPU allocation failed")
    retry = plan_load(compute, model, replace(options, num_gpu=layers), n_ctx_train)
    return replace(retry, why=f"GPU allocation failed with {plan.gpu_layers} layers")


def describe_compute(compute: Compute) -> str:
    """The start-up log line: what this build computes on.

    "compute: CPU (this build has no GPU backend)", "compute: Metal, Apple M3
    Pro, 36 GB unified", "compute: CUDA0 NVIDIA H200, 141 GB".
    """
    if not compute.gpus:
        if compute.gpu_backends:
            built = ", ".join(compute.gpu_backends)
            return f"compute: CPU (this build has {built} but found no GPU)"
        return "compute: CPU (this build has no GPU backend)"
    parts = []
    for gpu in compute.gpus:
        size = f"{gpu.total / 1e9:.0f} GB"
        if gpu.unified:
            parts.append(f"{gpu.name}, {gpu.description}, {size} unified")
        else:
            parts.append(f"{gpu.name} {gpu.description}, {size}")
    return "compute: " + "; ".join(parts)


def describe_memory(gpu: Device) -> str:
    """A GPU's free and total memory in MiB, for a log line."""
    return f"{gpu.name}: {gpu.free // _MIB} MiB free of {gpu.total // _MIB} MiB"
