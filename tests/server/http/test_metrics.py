"""GET /metrics: Prometheus text with request, token, batch, load and queue figures."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import (
    TINY,
    TINY_CLS,
    LiveServer,
    RecordingBackend,
    ServerFactory,
    wait_until,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(live: LiveServer, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of /metrics by (name, labels)."""
    response = live.client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_total(samples: Samples, route: str, method: str, status: str) -> float:
    return value(samples, "emberd_requests_total", route=route, method=method, status=status)


@pytest.fixture
def live(serve: ServerFactory) -> LiveServer:
    """A fresh server: nothing loaded, nothing counted."""
    return serve()


def test_fresh_server_exposes_every_family(live: LiveServer) -> None:
    text = live.client.get("/metrics").text
    for name in (
        "emberd_requests_total",
        "emberd_tokens_embedded_total",
        "emberd_sequences_embedded_total",
        "emberd_queue_depth",
        "emberd_loaded_models",
        "emberd_batch_sequences",
        "emberd_batch_tokens",
        "emberd_inference_seconds",
        "emberd_load_seconds",
    ):
        assert f"# TYPE {name} " in text, name
    samples = scrape(live)
    assert value(samples, "emberd_loaded_models") == 0
    assert value(samples, "emberd_queue_depth") == 0
    assert ("emberd_queue_depth", frozenset()) in samples
    assert value(samples, "emberd_load_seconds_count") == 0


def test_embed_requests_tokens_batches_and_loads_are_counted(live: LiveServer) -> None:
    before = scrape(live)
    bodies: list[dict[str, Any]] = [
        {"model": TINY, "input": "why is the sky blue"},
        {"model": TINY, "input": ["the grass is green", "hello world"]},
        {"model": TINY, "input": ["a", "b", "c"]},
    ]
    counts = []
    for body in bodies:
        response = live.embed(body)
        assert response.status_code == 200, response.text
        counts.append(response.json()["prompt_eval_count"])
    after = scrape(live)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("emberd_requests_total", route="/api/embed", method="POST", status="200") == 3
    assert grew("emberd_tokens_embedded_total") == sum(counts) == 7 + 6 + 4 + 9
    assert grew("emberd_sequences_embedded_total") == 6
    assert value(after, "emberd_batch_sequences_count") >= 3
    assert value(after, "emberd_batch_sequences_sum") == 6
    assert value(after, "emberd_batch_tokens_sum") == sum(counts)
    assert value(after, "emberd_inference_seconds_count") >= 3
    assert value(after, "emberd_load_seconds_count") == 1
    assert value(after, "emberd_load_seconds_sum") > 0
    assert value(after, "emberd_loaded_models") == 1
    live.embed({"model": TINY_CLS, "input": "sky"})
    later = scrape(live)
    assert value(later, "emberd_loaded_models") == 2
    assert value(later, "emberd_load_seconds_count") == 2


def test_every_dialect_and_status_is_counted(live: LiveServer) -> None:
    live.client.post("/v1/embeddings", json={"model": TINY, "input": "sky"})
    live.client.post("/api/embeddings", json={"model": TINY, "input": "sky"})
    live.client.post("/api/embed", json={"model": "nope", "input": "sky"})
    live.client.post("/api/embed", json={"input": "sky"})
    live.client.get("/api/embed")
    live.client.get("/metrics")
    samples = scrape(live)
    assert requests_total(samples, "/v1/embeddings", "POST", "200") == 1
    assert requests_total(samples, "/api/embeddings", "POST", "200") == 1
    assert requests_total(samples, "/api/embed", "POST", "404") == 1
    assert requests_total(samples, "/api/embed", "POST", "400") == 1
    assert requests_total(samples, "/api/embed", "GET", "405") == 1
    assert requests_total(samples, "/metrics", "GET", "200") == 1
    assert value(samples, "emberd_tokens_embedded_total") == 2 * 3  # failures embed nothing


def test_paths_are_labelled_by_route_template(live: LiveServer) -> None:
    for path in ("/nope", "/nope/1", "/a/b/c", "/api/nothing", "/v1/nothing"):
        assert live.client.get(path).status_code == 404
    for name in (TINY, TINY_CLS, "library/tiny:latest"):
        assert live.client.get(f"/v1/models/{name}").status_code == 200
    samples = scrape(live)
    routes = {dict(labels)["route"] for name, labels in samples if name == "emberd_requests_total"}
    assert routes == {"unmatched", "/v1/models/{model}"}
    assert requests_total(samples, "unmatched", "GET", "404") == 5
    assert requests_total(samples, "/v1/models/{model}", "GET", "200") == 3


def test_refused_requests_count_under_their_route(serve: ServerFactory) -> None:
    live = serve(api_keys=("sk-metrics-key",))
    key = {"Authorization": "Bearer sk-metrics-key"}
    assert live.client.post("/api/embed", json={"model": TINY}).status_code == 401
    assert live.client.get("/api/tags").status_code == 401
    refused = live.client.post("/api/embed", json={}, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert live.client.get("/nope", headers=key).status_code == 404
    samples = scrape(live, key)
    assert requests_total(samples, "/api/embed", "POST", "401") == 1
    assert requests_total(samples, "/api/tags", "GET", "401") == 1
    assert requests_total(samples, "/api/embed", "POST", "403") == 1
    assert requests_total(samples, "unmatched", "GET", "404") == 1


def test_queue_depth_counts_requests_in_flight(serve: ServerFactory) -> None:
    backend = RecordingBackend(hold_decodes=True)
    live = serve(backend=backend)
    answers: list[int] = []

    def request() -> None:
        with httpx.Client(base_url=live.url, timeout=10) as client:
            answers.append(
                client.post("/api/embed", json={"model": TINY, "input": "sky"}).status_code
            )

    worker = threading.Thread(target=request)
    worker.start()
    try:
        assert backend.decoding.wait(10)
        samples = scrape(live)
        assert value(samples, "emberd_queue_depth") == 1
        assert value(samples, "emberd_loaded_models") == 1
    finally:
        backend.release()
        worker.join(10)
    assert answers == [200]
    wait_until(lambda: value(scrape(live), "emberd_queue_depth") == 0)
