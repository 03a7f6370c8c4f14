"""The page for people: `GET /ui/` (models, live figures, a playground) and `GET /docs`.

Everything the pages load comes from `ui_assets/` inside the package, so
they work offline; `/docs` renders `/openapi.json` with the vendored Swagger
UI (`ui_assets/vendor/swagger-ui/`). The pages' data comes from `/ui/data/*`,
built from what `/api/tags`, `/api/ps` and the engine say. The files are
served without an API key (they hold no data); the data routes need one
when keys are set. Every answer here carries a strict Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emberd.models.capabilities import capabilities
from emberd.models.errors import ModelError
from emberd.models.store import EMBERD, FILE, OLLAMA, ModelRecord, ModelStores
from emberd.server import __version__
from emberd.server.core.engine import Engine
from emberd.server.http.activity import Activity
from emberd.server.http.api_types import EmbedRequest
from emberd.server.http.error_responses import NotFound
from emberd.server.http.render import json_response
from emberd.server.http.request_body import json_object, parse_body
from emberd.server.http.routes.ollama import embed_body, listed_model, ps_entry
from emberd.server.http.ui_types import (
    AvailableModels,
    LiveFigures,
    LoadAnswer,
    PlaygroundEmbeddings,
)

ASSETS = Path(__file__).with_name("ui_assets")

# Scripts, styles, images and requests from this server only: no inline
# script, no eval, no other origin, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
)
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Where the files the pages load are served, and which requests carry no key.
PUBLIC_PREFIX = "/ui/"
PUBLIC_PATHS = ("/ui", "/docs")
SOURCES = {EMBERD: "emberd store", FILE: "dropped file", OLLAMA: "Ollama store"}


def asset_files() -> dict[str, Path]:
    """Every file under ASSETS by its URL path: the only files ever served."""
    return {
        path.relative_to(ASSETS).as_posix(): path
        for path in sorted(ASSETS.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


def _file(path: Path) -> Response:
    media = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "text/plain"
    return FileResponse(path, media_type=media)


async def page(request: Request) -> Response:
    """GET /ui/: the page."""
    return _file(ASSETS / "index.html")


async def docs(request: Request) -> Response:
    """GET /docs: the API reference, rendered from /openapi.json."""
    return _file(ASSETS / "docs.html")


async def to_page(request: Request) -> Response:
    """GET /ui: on to /ui/, where the page's relative links resolve."""
    return RedirectResponse("/ui/", status_code=308)


async def asset(request: Request) -> Response:
    """GET /ui/{path}: one of the page's files."""
    files: dict[str, Path] = request.app.state.ui_files
    found = files.get(request.path_params["path"])
    if found is None:
        raise NotFound("not found")
    return _file(found)


def source_of(record: ModelRecord) -> str:
    """Where a model comes from, as the page names it."""
    return SOURCES.get(record.source, record.source)


def _available(stores: ModelStores) -> list[dict[str, Any]]:
    models = []
    for record in stores.list():
        try:
            entry = listed_model(record)
            entry["capabilities"] = [c.value for c in capabilities(record.info())]
        except Exception:  # as /api/tags: a file that cannot be read is left out
            continue
        entry["source"] = source_of(record)
        models.append(entry)
    return models


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def models(request: Request) -> Response:
    """GET /ui/data/models: /api/tags' entries, each with its source and capabilities."""
    entries = await asyncio.to_thread(_available, _engine(request).stores)
    return json_response(AvailableModels.render(models=entries))


async def live(request: Request) -> Response:
    """GET /ui/data/live: /api/ps' entries with their device, and the activity per model."""
    runtime = _engine(request).runtime
    running = []
    for view in runtime.loaded():
        with contextlib.suppress(ModelError):
            entry = ps_entry(view)
            share = view.size_vram / view.size if view.size else 0.0
            entry["device"] = "CPU" if share == 0 else f"{round(share * 100)}% GPU"
            running.append(entry)
    activity: Activity = request.app.state.activity
    return json_response(
        LiveFigures.render(
            version=__version__,
            running=running,
            queue_depth=runtime.pending,
            activity=activity.snapshot(),
        )
    )


async def embed(request: Request) -> Response:
    """POST /ui/data/embed: /api/embed's body; its vectors plus each input's token count."""
    body, result = await embed_body(request)
    return json_response(
        PlaygroundEmbeddings.render(
            model=body.model,
            embeddings=result.vectors,
            dimensions=int(result.vectors.shape[1]) if len(result.vectors) else 0,
            token_counts=list(result.token_counts),
            total_duration=int(result.total_seconds * 1e9),
        )
    )


async def load(request: Request) -> Response:
    """POST /ui/data/load: load any model, embedding or reranker (`keep_alive` 0 unloads)."""
    body = parse_body(EmbedRequest, json_object(await request.body()))
    engine = _engine(request)
    record = await engine.find(body.model)
    async with engine.lease(body.model, record, body.options or {}, body.keep_alive_seconds()):
        pass
    return json_response(LoadAnswer.render(model=body.model))


class PageHeaders:
    """Adds the pages' security headers (CSP first) to every answer under /ui and /docs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_PAGE_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def is_page_path(path: str) -> bool:
    """Whether `path` is one of the pages or their data."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)


def is_public_file(method: str, path: str) -> bool:
    """A page or one of its files: served without an API key (the data routes need one)."""
    if method not in ("GET", "HEAD"):
        return False
    return path in (*PUBLIC_PATHS, PUBLIC_PREFIX) or (
        path.startswith(PUBLIC_PREFIX) and not path.startswith("/ui/data/")
    )


routes = [
    Route("/ui", to_page, methods=["GET"]),
    Route("/ui/", page, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Route("/ui/data/models", models, methods=["GET"]),
    Route("/ui/data/live", live, methods=["GET"]),
    Route("/ui/data/embed", embed, methods=["POST"]),
    Route("/ui/data/load", load, methods=["POST"]),
    Route("/ui/{path:path}", asset, methods=["GET"]),
]
