"""Pulls that stall: a client that goes away stops its pull at every stage, and stalled
pulls never hold up the rest of the server.

The stages: the manifest (a registry that sends one byte and then waits), the
wait for another pull's lock on the same blob, and the blob itself (see
test_pull.py's stalled-blob tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx

from emberd.models.cancel import CancelSwitch
from emberd.models.pull import pull_model
from emberd.models.registry import PullCancelled
from emberd.models.store import ModelStores
from tests.support.harness import DEADLINE_S, ModelFiles, make_stores, running_server, settings_for
from tests.support.raw_http import raw_post
from tests.support.registry_server import Published, RegistryServer

PROMPT_S = 5.0  # a cancelled pull lets go within this; a stall lasts far longer
STALLED_PULLS = 12  # more than any default thread pool has threads on a small machine


def wait_for(check: Callable[[], bool], seconds: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def pull_in_thread(
    stores: ModelStores, url: str, cancel: CancelSwitch
) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pull_model("tiny", stores, url, cancel=cancel)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_a_cancelled_pull_stops_in_a_stalled_manifest(
    tmp_path: Path, registry: RegistryServer, published: Published
) -> None:
    release = registry.state.stall_manifests = threading.Event()
    try:
        cancel = CancelSwitch()
        thread, errors = pull_in_thread(ModelStores(tmp_path / "e", None), registry.url, cancel)
        wait_for(lambda: registry.state.stalled == 1)
        cancel.set()
        thread.join(PROMPT_S)
        assert not thread.is_alive(), "the pull still waits on the manifest"
        assert [type(e) for e in errors] == [PullCancelled]
        wait_for(lambda: registry.state.abandoned() == 1, PROMPT_S)  # its connection closed
    finally:
        release.set()


def test_a_cancelled_pull_stops_waiting_for_another_pulls_lock(
    tmp_path: Path, registry: RegistryServer, published: Published
) -> None:
    release = threading.Event()
    registry.state.stall[published.model] = (1000, release)
    stores = ModelStores(tmp_path / "e", None)
    try:
        first, _ = pull_in_thread(stores, registry.url, CancelSwitch())
        wait_for(lambda: published.model not in registry.state.stall)  # it holds the lock
        cancel = CancelSwitch()
        second, errors = pull_in_thread(stores, registry.url, cancel)
        time.sleep(0.2)  # into the wait for the lock
        cancel.set()
        second.join(PROMPT_S)
        assert not second.is_alive(), "the pull still waits for the other's lock"
        assert [type(e) for e in errors] == [PullCancelled]
    finally:
        release.set()
    first.join(DEADLINE_S)
    assert stores.resolve("tiny").path.exists()  # the first pull was not disturbed


def test_stalled_pulls_hold_up_nothing_and_stop_when_their_clients_leave(
    tmp_path: Path,
    model_files: ModelFiles,
    registry: RegistryServer,
    published: Published,
    gguf: bytes,
) -> None:
    release = registry.state.stall_manifests = threading.Event()
    stores = make_stores(tmp_path, model_files)
    settings = settings_for(stores, {"EMBERD_REGISTRY": registry.url})
    try:
        with running_server(settings) as live, ExitStack() as clients:
            warm = httpx.post(f"{live.url}/api/embed", json={"model": "tiny"}, timeout=180)
            assert warm.status_code == 200  # loaded (slow on a busy machine)
            for stream in [b"true", b"false"] * (STALLED_PULLS // 2):
                body = b'{"model": "tiny", "stream": ' + stream + b"}"
                clients.enter_context(raw_post(live.url, "/api/pull", body))
            wait_for(lambda: registry.state.stalled >= 4)
            time.sleep(1.1)  # past the engine's cache of resolved names; more pulls stall
            # Every other kind of request is answered while the pulls wait.
            quick = httpx.Client(base_url=live.url, timeout=DEADLINE_S)
            assert quick.post("/api/embed", json={"model": "tiny", "input": "sky"}).is_success
            assert quick.get("/api/tags").is_success
            assert quick.get("/v1/models").is_success
            assert quick.post("/api/show", json={"model": "tiny"}).is_success
            gone = quick.request("DELETE", "/api/delete", json={"model": "nothing-here"})
            assert gone.status_code == 404
            clients.close()  # every pulling client goes away
            # Their pulls stop: each stalled manifest is left at once, and the
            # queued ones never start.
            wait_for(lambda: registry.state.abandoned() == registry.state.stalled, PROMPT_S)
            release.set()
            # The pulls' threads are free again: a new pull goes through at once.
            registry.state.stall_manifests = None
            done = quick.post("/api/pull", json={"model": "tiny", "stream": False})
            assert done.json() == {"status": "success"}
            quick.close()
    finally:
        release.set()
