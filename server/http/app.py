"""`create_app`: the stores, runtime and engine wired to the routes. No globals."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from emberd.backends.base import Backend
from emberd.models.errors import ModelError
from emberd.models.leftovers import sweep
from emberd.models.store import ModelStores
from emberd.server.assembly import build_engine, request_limits
from emberd.server.config import Settings
from emberd.server.core.engine import Engine
from emberd.server.http import openapi, ui
from emberd.server.http.activity import Activity
from emberd.server.http.body_limit import BodyLimit
from emberd.server.http.disconnect import DisconnectWatch
from emberd.server.http.error_responses import HANDLED, ErrorMiddleware, error_response
from emberd.server.http.metrics import Metrics, RequestMetrics
from emberd.server.http.metrics import routes as metrics_routes
from emberd.server.http.pools import HttpPools
from emberd.server.http.routes import manage, ollama, openai, rerank
from emberd.server.http.security import (
    BUILTIN_ORIGINS,
    Admission,
    ApiKeyAuth,
)

log = logging.getLogger("emberd")


def create_app(
    settings: Settings,
    *,
    backend: Backend | None = None,
    stores: ModelStores | None = None,
    prepare_default_model: bool = False,
) -> Starlette:
    """The whole HTTP application for `settings`; `backend`/`stores` may be swapped in tests.

    With `prepare_default_model`, start-up makes sure the default model is in
    a store (importing the bundled all-minilm if needed), so the first
    request does not pay for it.
    """
    metrics = Metrics()
    engine = build_engine(
        settings,
        backend=backend,
        stores=stores,
        observe=metrics.observe_batch,
        on_load=metrics.observe_load,
    )
    runtime = engine.runtime
    metrics.watch(lambda: runtime.pending, lambda: len(runtime.loaded()))

    pools = HttpPools()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await engine.start()
        # What killed pulls and imports left in the store (never while one runs).
        await pools.listing.run(sweep, engine.stores.emberd_dir)
        if prepare_default_model:
            await _prepare(engine, settings.default_model)
        yield
        metrics.flush()  # the last requests' counts and access lines
        pools.close()
        engine.resolving.close()
        await runtime.close()

    routes = [
        *ollama.routes,
        *openai.routes,
        *rerank.routes,
        *manage.routes,
        *metrics_routes,
        *openapi.routes,
        *(ui.routes if settings.ui else []),
    ]
    app = Starlette(
        routes=routes,
        middleware=_middleware(settings, metrics, routes),
        exception_handlers=dict.fromkeys(HANDLED, error_response),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.activity = Activity()
    app.state.ui_files = ui.asset_files() if settings.ui else {}
    app.state.pools = pools
    return app


async def _prepare(engine: Engine, name: str) -> None:
    try:
        record = await engine.find(name)
    except ModelError as exc:
        log.warning("default model %s is not available: %s", name, exc)
        return
    log.info("default model %s: %s", record.name.display, record.path)


def _middleware(
    settings: Settings, metrics: Metrics, routes: Sequence[BaseRoute]
) -> list[Middleware]:
    """Outermost first: metrics (and the access log), disconnects, the pages' headers,
    admission (Host check, Origin check, CORS), body size, errors, then API keys.

    Errors and the body bound sit inside CORS so that a browser page can read
    every error, unexpected 500s included; API keys inside CORS so preflights
    need none. Refusals of where a request comes from go before all work.
    """
    origins = (*BUILTIN_ORIGINS, *settings.origins)
    stack = [
        Middleware(RequestMetrics, metrics=metrics, routes=routes),
        Middleware(DisconnectWatch),
    ]
    if settings.ui:
        stack.append(Middleware(ui.PageHeaders))
    stack.append(Middleware(Admission, origins=origins, check_host=settings.is_loopback()))
    stack.append(
        Middleware(BodyLimit, limits=request_limits(settings), timeout_s=settings.body_timeout)
    )
    stack.append(Middleware(ErrorMiddleware))
    if settings.api_keys:
        public = {"open_paths": ui.is_public_file} if settings.ui else {}
        stack.append(Middleware(ApiKeyAuth, keys=settings.api_keys, **public))
    elif not settings.is_loopback():
        log.warning(
            "listening on %s with no API key: anyone who can reach it can use it "
            "(set EMBERD_API_KEY or --api-key)",
            settings.address,
        )
    return stack
