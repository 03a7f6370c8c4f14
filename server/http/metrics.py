"""Prometheus metrics: requests, tokens, queue depth, batches, load and inference time.

One registry per app (no process globals), rendered at `GET /metrics`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emberd.server.core.batching import BatchRecord
from emberd.server.http import access_log

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The server's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Held back for a moment (`RECORD_AFTER_S`), then counted together.
        self._batches: list[BatchRecord] = []
        self._ended: list[tuple[str, Scope, int]] = []
        self._flush_armed = False
        reg = self.registry
        self.requests = Counter(
            "emberd_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=reg,
        )
        self.tokens = Counter("emberd_tokens_embedded", "Tokens decoded.", registry=reg)
        self.sequences = Counter("emberd_sequences_embedded", "Inputs embedded.", registry=reg)
        self.queue_depth = Gauge(
            "emberd_queue_depth", "Requests admitted and not yet answered.", registry=reg
        )
        self.loaded_models = Gauge("emberd_loaded_models", "Models in memory.", registry=reg)
        self.batch_sequences = Histogram(
            "emberd_batch_sequences", "Inputs per decode.", buckets=_SIZE_BUCKETS, registry=reg
        )
        self.batch_tokens = Histogram(
            "emberd_batch_tokens", "Tokens per decode.", buckets=_TOKEN_BUCKETS, registry=reg
        )
        self.inference_seconds = Histogram(
            "emberd_inference_seconds",
            "Time of one decode.",
            buckets=_SECONDS_BUCKETS,
            registry=reg,
        )
        self.load_seconds = Histogram(
            "emberd_load_seconds",
            "Time to load a model.",
            buckets=_SECONDS_BUCKETS,
            registry=reg,
        )

    def watch(self, queue_depth: Callable[[], int], loaded_models: Callable[[], int]) -> None:
        """Read the gauges from the runtime at scrape time."""
        self.queue_depth.set_function(lambda: float(queue_depth()))
        self.loaded_models.set_function(lambda: float(loaded_models()))

    def observe_batch(self, record: BatchRecord) -> None:
        """Called by the batcher after each decode (on the event loop); counted with the
        request it served, a moment after that request ends."""
        self._batches.append(record)

    def observe_load(self, seconds: float) -> None:
        """Called by the runtime after each successful load."""
        self.load_seconds.observe(seconds)

    def request_ended(self, route: str, scope: Scope, status: int) -> None:
        """Count a request and write its access line, `RECORD_AFTER_S` from now."""
        self._ended.append((route, scope, status))
        if not self._flush_armed:
            self._flush_armed = True
            asyncio.get_running_loop().call_later(RECORD_AFTER_S, self.flush)

    def flush(self) -> None:
        """Count the decodes and requests held back, and write their access lines."""
        self._flush_armed = False
        batches, self._batches = self._batches, []
        for record in batches:
            self.tokens.inc(record.tokens)
            self.sequences.inc(record.sequences)
            self.batch_sequences.observe(record.sequences)
            self.batch_tokens.observe(record.tokens)
            self.inference_seconds.observe(record.seconds)
        ended, self._ended = self._ended, []
        for route, scope, status in ended:
            self.requests.labels(route, scope["method"], str(status)).inc()
        access_log.write((scope, status) for _, scope, status in ended)

    def render(self) -> bytes:
        """The Prometheus text exposition (what is held back counted first)."""
        self.flush()
        return generate_latest(self.registry)


def route_label(scope: Scope, routes: Sequence[BaseRoute] = ()) -> str:
    """The route template a request matched (as OpenAPI writes it), so labels stay few.

    A request refused before routing (401, 403) has no route in its scope:
    it is matched against `routes` here, so it counts under its own route.
    """
    route = scope.get("route")
    if route is None:
        route = _match(scope, routes)
    path = getattr(route, "path_format", None)
    return path if isinstance(path, str) else "unmatched"


def _match(scope: Scope, routes: Sequence[BaseRoute]) -> BaseRoute | None:
    """The route the router would pick: a full match, else one matching all but the method."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


# The status counted for a request whose client left before its answer (nginx's 499).
CLIENT_CLOSED = 499
# Ended requests are counted and logged together, this long after the first of
# them: done one by one, between a response and its client's next request,
# the work would sit in every request's latency.
RECORD_AFTER_S = 0.1


class RequestMetrics:
    """Counts every HTTP request by route, method and status (499: the client went away),
    and has its access line written, both a moment after it is over (`RECORD_AFTER_S`)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the app's, for requests refused before routing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        except BaseException:
            status = status or 500  # uvicorn answers an escaped exception with a 500
            raise
        finally:
            route = route_label(scope, self.routes)
            self.metrics.request_ended(route, scope, status or CLIENT_CLOSED)


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics."""
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics_endpoint, methods=["GET"])]
