"""The runtime over HTTP: keep_alive, reloads, eviction, the queue bound, single loads."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from tests.support.harness import (
    DEADLINE_S,
    TINY,
    TINY_CLS,
    LiveServer,
    RecordingBackend,
    ServerFactory,
    in_background,
    post_embed,
    wait_until,
)
from tests.support.raw_http import raw_post

BUSY = "server busy, please try again.  maximum pending requests exceeded"


def expiry(live: LiveServer) -> datetime:
    (entry,) = live.ps()
    return datetime.fromisoformat(entry["expires_at"])


# -- keep_alive --------------------------------------------------------------------


@pytest.mark.parametrize("keep_alive", [0.3, "300ms"], ids=["seconds", "go-duration"])
def test_short_keep_alive_unloads_after_it_passes(serve: ServerFactory, keep_alive: object) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend)
    started = time.monotonic()
    response = live.embed({"model": TINY, "input": "sky", "keep_alive": keep_alive})
    assert response.status_code == 200, response.text
    now = datetime.now(timezone.utc)
    assert now < expiry(live) <= now + timedelta(seconds=0.35)
    wait_until(lambda: live.ps() == [], deadline_s=5)
    assert time.monotonic() - started >= 0.3
    (model,) = backend.models
    wait_until(lambda: model.closed)


@pytest.mark.parametrize("keep_alive", [0, "0", 0.0, "0s"])
def test_zero_keep_alive_unloads_when_the_request_ends(
    serve: ServerFactory, keep_alive: object
) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend)
    response = live.embed({"model": TINY, "input": "sky", "keep_alive": keep_alive})
    assert response.status_code == 200, response.text
    assert len(response.json()["embeddings"]) == 1
    assert live.ps() == []
    (model,) = backend.models
    assert model.closed


def test_zero_keep_alive_without_input_loads_then_unloads(serve: ServerFactory) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend)
    live.embed({"model": TINY, "keep_alive": "10m"})
    assert live.loaded_names() == ["tiny:latest"]
    response = live.embed({"model": TINY, "keep_alive": 0})
    assert response.status_code == 200
    assert response.json()["embeddings"] == []
    assert live.ps() == []
    assert backend.load_calls == 1


@pytest.mark.parametrize("keep_alive", [-1, "-1m", -0.5, "-1h30m"])
def test_negative_keep_alive_keeps_the_model_forever(
    serve: ServerFactory, keep_alive: object
) -> None:
    live = serve()
    response = live.embed({"model": TINY, "input": "sky", "keep_alive": keep_alive})
    assert response.status_code == 200, response.text
    assert expiry(live) > datetime.now(timezone.utc) + timedelta(days=365)


@pytest.mark.parametrize("keep_alive", [1e12, 1e300, "2562047h"])
def test_keep_alive_past_gos_range_is_forever(serve: ServerFactory, keep_alive: object) -> None:
    live = serve()
    response = live.embed({"model": TINY, "input": "sky", "keep_alive": keep_alive})
    assert response.status_code == 200, response.text
    assert expiry(live) > datetime.now(timezone.utc) + timedelta(days=365)
    assert live.embed({"model": TINY, "input": "sky"}).status_code == 200


@pytest.mark.parametrize(
    ("keep_alive", "message"),
    [
        ("5", 'time: missing unit in duration "5"'),
        ("10x", 'time: unknown unit "x" in duration "10x"'),
        ("soon", 'time: invalid duration "soon"'),
    ],
)
def test_bad_keep_alive_strings_are_400_with_gos_message(
    server: LiveServer, keep_alive: str, message: str
) -> None:
    response = server.embed({"model": TINY, "input": "sky", "keep_alive": keep_alive})
    assert response.status_code == 400
    assert response.json() == {"error": message}


@pytest.mark.parametrize("keep_alive", [True, [1], {"s": 1}])
def test_keep_alive_of_another_type_is_400(server: LiveServer, keep_alive: object) -> None:
    response = server.embed({"model": TINY, "input": "sky", "keep_alive": keep_alive})
    assert response.status_code == 400
    assert "keep_alive" in response.json()["error"]


def test_absent_keep_alive_keeps_the_current_setting(serve: ServerFactory) -> None:
    live = serve()
    assert live.embed({"model": TINY, "input": "sky", "keep_alive": -1}).status_code == 200
    assert live.embed({"model": TINY, "input": "sky"}).status_code == 200
    assert expiry(live) > datetime.now(timezone.utc) + timedelta(days=365)
    assert live.embed({"model": TINY, "input": "sky", "keep_alive": "2m"}).status_code == 200
    assert live.embed({"model": TINY, "input": "sky"}).status_code == 200
    now = datetime.now(timezone.utc)
    assert now + timedelta(seconds=110) < expiry(live) <= now + timedelta(minutes=2)


def test_default_keep_alive_is_five_minutes(serve: ServerFactory) -> None:
    live = serve()
    assert live.embed({"model": TINY, "input": "sky"}).status_code == 200
    now = datetime.now(timezone.utc)
    assert now + timedelta(seconds=290) < expiry(live) <= now + timedelta(minutes=5)


def test_ollama_keep_alive_setting_is_the_default(serve: ServerFactory) -> None:
    live = serve(env={"OLLAMA_KEEP_ALIVE": "2h"})
    assert live.embed({"model": TINY, "input": "sky"}).status_code == 200
    now = datetime.now(timezone.utc)
    assert now + timedelta(minutes=119) < expiry(live) <= now + timedelta(hours=2)


def test_ollama_keep_alive_zero_unloads_after_each_request(serve: ServerFactory) -> None:
    live = serve(env={"OLLAMA_KEEP_ALIVE": "0"})
    assert live.embed({"model": TINY, "input": "sky"}).status_code == 200
    assert live.ps() == []


# -- reloads and eviction ----------------------------------------------------------


def test_changed_num_ctx_reloads_the_model(serve: ServerFactory) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend)
    for num_ctx in (32, 64):
        response = live.embed({"model": TINY, "input": "sky", "options": {"num_ctx": num_ctx}})
        assert response.status_code == 200, response.text
        assert [e["context_length"] for e in live.ps()] == [num_ctx]
    first, second = backend.models
    assert first.closed and not second.closed
    assert (first.options.num_ctx, second.options.num_ctx) == (32, 64)


def test_same_load_options_reuse_the_loaded_model(serve: ServerFactory) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend)
    for options in ({"num_ctx": 32}, {"num_ctx": 32, "temperature": 0.5}, {"num_ctx": 32.0}):
        response = live.embed({"model": TINY, "input": "sky", "options": options})
        assert response.status_code == 200, response.text
    assert backend.load_calls == 1


def test_null_options_mean_unset(serve: ServerFactory) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend)
    live.embed({"model": TINY, "input": "sky"})
    options = {"num_ctx": None, "num_batch": None, "temperature": None, "stop": None}
    response = live.embed({"model": TINY, "input": "sky", "options": options})
    assert response.status_code == 200, response.text
    assert backend.load_calls == 1


def test_loading_one_model_too_many_evicts_the_idle_one(serve: ServerFactory) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend, max_loaded_models=1)
    assert live.embed({"model": TINY, "input": "sky"}).status_code == 200
    assert live.loaded_names() == ["tiny:latest"]
    assert live.embed({"model": TINY_CLS, "input": "sky"}).status_code == 200
    assert live.loaded_names() == ["tiny-cls:latest"]
    first, second = backend.models
    wait_until(lambda: first.closed)  # closed in the background
    assert not second.closed


def test_eviction_picks_the_model_that_expires_first(serve: ServerFactory) -> None:
    live = serve(max_loaded_models=2)
    live.embed({"model": TINY, "input": "sky", "keep_alive": "1h"})
    live.embed({"model": TINY_CLS, "input": "sky", "keep_alive": "1m"})
    response = live.embed({"model": "ollama-tiny", "input": "sky", "keep_alive": "30m"})
    assert response.status_code == 200, response.text
    assert live.loaded_names() == ["tiny:latest", "ollama-tiny:latest"]


# -- concurrency: the queue bound and single loads ---------------------------------


def test_past_the_queue_bound_requests_get_503(serve: ServerFactory) -> None:
    backend = RecordingBackend(gated=True)
    live = serve(backend=backend, max_queue=1)
    first = in_background(post_embed(live, {"model": TINY, "input": "sky"}))
    assert backend.entered.wait(DEADLINE_S)
    busy = live.embed({"model": TINY, "input": "sky"})
    assert busy.status_code == 503
    assert busy.json() == {"error": BUSY}
    openai = live.client.post("/v1/embeddings", json={"model": TINY, "input": "sky"})
    assert openai.status_code == 503
    assert openai.json()["error"]["message"] == BUSY
    assert openai.json()["error"]["type"] == "api_error"
    backend.release()
    response = first()
    assert response.status_code == 200, response.text
    assert len(response.json()["embeddings"]) == 1
    # The bound counts pending requests, not requests ever made: room again.
    assert live.embed({"model": TINY, "input": "sky"}).status_code == 200
    assert backend.load_calls == 1


def test_overload_is_logged_once_per_interval_not_per_request(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RecordingBackend(gated=True)
    live = serve(backend=backend, max_queue=1)
    first = in_background(post_embed(live, {"model": TINY, "input": "sky"}))
    assert backend.entered.wait(DEADLINE_S)
    with caplog.at_level(logging.INFO, logger="emberd.errors"):
        for _ in range(20):
            assert live.embed({"model": TINY, "input": "sky"}).status_code == 503
    backend.release()
    assert first().status_code == 200
    busy = [r for r in caplog.records if "503" in r.getMessage()]
    assert len(busy) <= 1 and all(r.levelno == logging.WARNING for r in busy)


def test_concurrent_requests_for_a_loading_model_share_one_load(serve: ServerFactory) -> None:
    backend = RecordingBackend(gated=True)
    live = serve(backend=backend)
    n = 6
    texts = [f"sky {i}" for i in range(n)]
    waiting = [in_background(post_embed(live, {"model": TINY, "input": t})) for t in texts]
    assert backend.entered.wait(DEADLINE_S)
    wait_until(lambda: live.pending == n)
    held = 0.1
    time.sleep(held)
    backend.release()
    responses = [result() for result in waiting]
    assert [r.status_code for r in responses] == [200] * n
    assert backend.load_calls == 1
    # load_duration includes the wait for a load another request started.
    assert all(r.json()["load_duration"] >= held * 1e9 for r in responses)
    assert live.loaded_names() == ["tiny:latest"]
    # Each request got its own input's vector.
    singles = [live.vectors(TINY, t)[0].tolist() for t in texts]
    for response, single in zip(responses, singles, strict=True):
        assert response.json()["embeddings"][0] == pytest.approx(single, abs=1e-5)


def test_a_client_that_gives_up_during_a_load_leaves_nothing_behind(serve: ServerFactory) -> None:
    backend = RecordingBackend(gated=True)
    live = serve(backend=backend)
    with raw_post(live.url, "/api/embed", b'{"model": "tiny", "input": "sky"}'):
        assert backend.entered.wait(DEADLINE_S)  # the load has begun; the client leaves
    backend.release()
    wait_until(lambda: live.pending == 0)
    wait_until(lambda: live.loaded_names() == ["tiny:latest"])  # the load outlives its client
    assert live.embed({"model": TINY, "input": "sky", "keep_alive": 0}).status_code == 200
    assert live.ps() == []  # no lease was left behind to keep it loaded
    assert backend.load_calls == 1


def test_a_model_is_not_evicted_under_a_request_waiting_for_its_load(serve: ServerFactory) -> None:
    backend = RecordingBackend(gated=True)
    live = serve(backend=backend, max_loaded_models=1)
    # The first request holds tiny (its load is gated); a request for another
    # model must wait for it rather than unload tiny under it.
    first = in_background(post_embed(live, {"model": TINY, "input": "sky"}))
    assert backend.entered.wait(DEADLINE_S)
    second = in_background(post_embed(live, {"model": TINY_CLS, "input": "sky"}))
    wait_until(lambda: live.pending == 2)
    backend.release()
    assert first().status_code == 200
    assert second().status_code == 200
    assert live.loaded_names() == ["tiny-cls:latest"]
    assert backend.load_calls == 2


def test_a_model_is_not_evicted_under_a_running_decode(serve: ServerFactory) -> None:
    backend = RecordingBackend(hold_decodes=True)
    live = serve(backend=backend, max_loaded_models=1)
    first = in_background(post_embed(live, {"model": TINY, "input": "why is the sky blue"}))
    assert backend.decoding.wait(DEADLINE_S)
    second = in_background(post_embed(live, {"model": TINY_CLS, "input": "sky"}))
    wait_until(lambda: live.pending == 2)
    time.sleep(0.05)  # room for a wrong eviction to happen
    (tiny,) = backend.models
    assert not tiny.closed
    assert backend.load_calls == 1
    backend.release()
    response = first()
    assert response.status_code == 200, response.text
    assert second().status_code == 200
    assert live.loaded_names() == ["tiny-cls:latest"]
    wait_until(lambda: tiny.closed)
    expected = live.vectors(TINY, "why is the sky blue")[0]
    np.testing.assert_allclose(response.json()["embeddings"][0], expected, atol=1e-5)


def test_a_reload_waits_for_the_running_decode(serve: ServerFactory) -> None:
    backend = RecordingBackend(hold_decodes=True)
    live = serve(backend=backend)
    first = in_background(post_embed(live, {"model": TINY, "input": "sky"}))
    assert backend.decoding.wait(DEADLINE_S)
    other_ctx = {"model": TINY, "input": "sky", "options": {"num_ctx": 16}}
    second = in_background(post_embed(live, other_ctx))
    wait_until(lambda: live.pending == 2)
    time.sleep(0.05)  # room for a wrong reload to happen
    (old,) = backend.models
    assert not old.closed
    backend.release()
    assert first().status_code == 200
    assert second().status_code == 200
    assert [e["context_length"] for e in live.ps()] == [16]
    assert backend.load_calls == 2
    wait_until(lambda: old.closed)
