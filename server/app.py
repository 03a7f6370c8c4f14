"""`create_app`: the stores, runtime and engine wired to the routes. No globals."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from backends.base import Backend
from models.store import ModelStores
from server.config import Settings
from server.engine import Engine
from server.errors import HANDLED, ErrorMiddleware, error_response
from server.options import ServerDefaults
from server.routes import ollama, openai
from server.runtime import Runtime, RuntimeLimits

log = logging.getLogger("emberd")


def create_app(
    settings: Settings,
    *,
    backend: Backend | None = None,
    stores: ModelStores | None = None,
) -> Starlette:
    """The whole HTTP application for `settings`; `backend`/`stores` may be swapped in tests."""
    if backend is None:
        from backends.llama_cpp import LlamaCppBackend, gpu_offload_supported

        backend = LlamaCppBackend()
        gpu = gpu_offload_supported()
    else:
        gpu = False
    if stores is None:
        stores = ModelStores(settings.models_dir, settings.ollama_models_dir)
    runtime = Runtime(
        backend,
        RuntimeLimits(
            max_loaded=settings.max_loaded_models,
            max_queue=settings.max_queue,
            default_keep_alive=settings.keep_alive,
        ),
    )
    defaults = ServerDefaults(
        context_length=settings.context_length,
        num_thread=settings.num_thread,
        gpu_available=gpu,
    )
    engine = Engine(stores, runtime, defaults)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await runtime.close()

    app = Starlette(
        routes=[*ollama.routes, *openai.routes],
        middleware=[Middleware(ErrorMiddleware)],
        exception_handlers=dict.fromkeys(HANDLED, error_response),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    return app
