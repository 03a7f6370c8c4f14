"""Settings become a working core: the one place a backend, stores, runtime and engine meet.

The HTTP app and bulk embedding both build their engine here, so they load,
vet and thread models the same way. The core itself never reads `Settings`:
every bound and default it needs is handed to it from here.
"""

from __future__ import annotations

from collections.abc import Callable

from emberd.backends.base import Backend
from emberd.backends.runner import RunnerBackend
from emberd.models.store import ModelStores
from emberd.server.config import Settings
from emberd.server.core.batching import BatchRecord
from emberd.server.core.engine import Engine
from emberd.server.core.limits import RequestLimits
from emberd.server.core.options import ServerDefaults
from emberd.server.core.runtime import Runtime, RuntimeLimits


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


def build_engine(
    settings: Settings,
    *,
    backend: Backend | None = None,
    stores: ModelStores | None = None,
    limits: RuntimeLimits | None = None,
    observe: Callable[[BatchRecord], None] | None = None,
    on_load: Callable[[float], None] | None = None,
) -> Engine:
    """The engine `settings` describe; `backend`/`stores`/`limits` may be swapped in.

    By default each model runs in a runner process of its own (llama.cpp never
    enters this process); `observe` and `on_load` see every batch and load
    (metrics). `Engine.start()` readies the backend; `runtime.close()` ends it.
    """
    if backend is None:
        backend = RunnerBackend(log_level=settings.log_level)
    if stores is None:
        stores = ModelStores(settings.models_dir, settings.ollama_models_dir)
    runtime = Runtime(
        backend,
        limits or runtime_limits(settings),
        observe=observe,
        on_load=on_load,
    )
    defaults = ServerDefaults(
        context_length=settings.context_length,
        num_thread=settings.num_thread,
    )
    return Engine(stores, runtime, defaults, request_limits(settings))
