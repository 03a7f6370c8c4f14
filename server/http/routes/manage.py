"""Model management routes: POST /api/pull and DELETE /api/delete.

A pull runs in a thread of the pulls' own pool (it blocks on the network
and the disk), so the server keeps answering while it downloads, and slow
registries never hold up listings or embeds. Streamed, its progress goes
out as newline-delimited JSON, an error as a last `{"error": ...}` line; a
client that goes away stops the pull, and the partial download is kept for
the next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from emberd.models.cancel import CancelSwitch
from emberd.models.errors import ModelNotFound
from emberd.models.names import ModelName
from emberd.models.pull import PullProgress, pull_model
from emberd.models.store import ModelStores
from emberd.server.core.pools import WorkPool
from emberd.server.http.api_types import DeleteRequest, ErrorBody, PullRequest, PullStatus
from emberd.server.http.error_responses import BadRequest, NotFound, describe
from emberd.server.http.pools import pools_of
from emberd.server.http.render import dumps, json_response
from emberd.server.http.request_body import json_object, parse_body

NDJSON = "application/x-ndjson"


# A pull with everything but its progress listener and cancel switch decided.
PullJob = Callable[[Callable[[PullProgress], None], CancelSwitch], object]


async def pull(request: Request) -> Response:
    """POST /api/pull: download a model from its registry into emberd's store."""
    body = parse_body(PullRequest, json_object(await request.body()))
    name = body.target()
    if not name:
        raise BadRequest("model is required")
    ModelName.parse(name)  # a bad name is a 400 before anything streams
    stores: ModelStores = request.app.state.engine.stores
    registry: str = request.app.state.settings.registry

    def job(progress: Callable[[PullProgress], None], cancel: CancelSwitch) -> object:
        return pull_model(name, stores, registry, progress, insecure=body.insecure, cancel=cancel)

    if body.stream is False:
        cancel = CancelSwitch()
        try:
            await pools_of(request).pulls.run(job, lambda _: None, cancel)
        except Exception as exc:
            info = describe(exc)
            return json_response(ErrorBody.render(error=info.message), info.status)
        finally:
            cancel.set()  # a client that left cancels this handler: stop the download too
        return json_response(PullStatus.render(status="success"))
    return StreamingResponse(_progress_lines(job, pools_of(request).pulls), media_type=NDJSON)


async def _progress_lines(job: PullJob, pulls: WorkPool) -> AsyncIterator[bytes]:
    """Run `job` in a thread and yield its progress as JSON lines, then any error."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()
    cancel = CancelSwitch()

    def emit(line: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            loop.call_soon_threadsafe(lines.put_nowait, line)

    def work() -> None:
        try:
            job(lambda event: emit(dumps(PullStatus.render(**event.to_json())) + b"\n"), cancel)
        except Exception as exc:
            emit(dumps(ErrorBody.render(error=describe(exc).message)) + b"\n")
        finally:
            emit(None)

    worker = asyncio.ensure_future(pulls.run(work))
    try:
        while (line := await lines.get()) is not None:
            yield line
        await worker
    finally:
        cancel.set()  # the client left early: stop the download


async def delete(request: Request) -> Response:
    """DELETE /api/delete: remove a model and the blobs no other model uses."""
    body = parse_body(DeleteRequest, json_object(await request.body()))
    name = body.target()
    if not name:
        raise BadRequest("model is required")
    stores: ModelStores = request.app.state.engine.stores
    try:
        await pools_of(request).listing.run(stores.delete, name)
    except ModelNotFound:
        raise NotFound(f"model '{name}' not found") from None
    return Response(status_code=200)


routes = [
    Route("/api/pull", pull, methods=["POST"]),
    Route("/api/delete", delete, methods=["DELETE"]),
]
