"""Settings become a working core: the one place a backend, stores, runtime and engine meet.

The HTTP app and bulk embedding both build their engine here, so they load,
vet and thread models the same way. The core itself never reads `Settings`:
every bound and default it needs is handed to it from here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from emberd.backends.base import Backend
from emberd.models.store import ModelStores
from emberd.server.config import Settings
from emberd.server.core.batching import BatchRecord
from emberd.server.core.engine import Engine
from emberd.server.core.limits import RequestLimits
from emberd.server.core.options import ServerDefaults
from emberd.server.core.runtime import Runtime, RuntimeLimits
from emberd.server.core.vetting import file_vetter

log = logging.getLogger("emberd.server")


def request_limits(settings: Settings) -> RequestLimits:
    """The bounds on one request that `settings` set."""
    return RequestLimits(
        max_body_size=settings.max_body_size,
        max_inputs=settings.max_inputs,
        max_tokens=settings.max_request_tokens,
    )


def runtime_limits(settings: Settings) -> RuntimeLimits:
    """How many models may be loaded and requests wait, and how long models stay."""
    return RuntimeLimits(
        max_loaded=settings.max_loaded_models,
        max_queue=settings.max_queue,
        default_keep_alive=settings.keep_alive,
    )


def llama_cpp_backend() -> tuple[Backend, int]:
    """The llama.cpp backend, its threads following the machine's load, and its GPU count.

    Logs what computes ("compute: CUDA0 NVIDIA H200, 141 GB").
    """
    from emberd.backends.cpu_load import CpuLoad
    from emberd.backends.devices import describe_compute
    from emberd.backends.llama_cpp import LlamaCppBackend, compute_devices

    compute = compute_devices()
    log.info("%s", describe_compute(compute))
    return LlamaCppBackend(CpuLoad()), len(compute.gpus)


def build_engine(
    settings: Settings,
    *,
    backend: Backend | None = None,
    stores: ModelStores | None = None,
    limits: RuntimeLimits | None = None,
    probe: bool | None = None,
    observe: Callable[[BatchRecord], None] | None = None,
    on_load: Callable[[float], None] | None = None,
) -> Engine:
    """The engine `settings` describe; `backend`/`stores`/`limits` may be swapped in.

    `probe` (default: with the llama.cpp backend) tries each model file's
    first load in a child process; `observe` and `on_load` see every batch
    and load (metrics).
    """
    gpu_devices = 0
    if backend is None:
        backend, gpu_devices = llama_cpp_backend()
        probe = True if probe is None else probe
    vet = file_vetter(settings.models_dir) if probe else None
    if stores is None:
        stores = ModelStores(settings.models_dir, settings.ollama_models_dir)
    runtime = Runtime(
        backend,
        limits or runtime_limits(settings),
        observe=observe,
        on_load=on_load,
        vet=vet,
    )
    defaults = ServerDefaults(
        context_length=settings.context_length,
        num_thread=settings.num_thread,
        gpu_devices=gpu_devices,
    )
    return Engine(stores, runtime, defaults, request_limits(settings))
