"""A new, large file in the store is hashed once, and its hash holds up no unrelated request.

The hash is made slow on purpose (a multi-GB file takes many seconds): the
function that reads the file is wrapped so that it waits, and counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import emberd.models.store as store_module
from emberd.models.store import ModelStores
from tests.support.harness import (
    DEADLINE_S,
    TINY,
    ModelFiles,
    ServerFactory,
    make_stores,
)
from tests.support.tiny_model import write_tiny_bert

ASKERS = 6
LISTINGS = 40  # more than any default thread pool has threads


class SlowHash:
    """`file_digest`, counted, and held until `release` is set (or a deadline passes)."""

    def __init__(self, hold_s: float) -> None:
        self.real = store_module.file_digest
        self.calls = 0
        self.paths: list[Path] = []
        self.hold_s = hold_s
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, path: Path) -> str:
        with self.lock:
            self.calls += 1
            self.paths.append(path)
        self.release.wait(self.hold_s)
        return self.real(path)


@pytest.fixture
def slow_hash(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowHash]:
    slow = SlowHash(hold_s=0.5)
    monkeypatch.setattr(store_module, "file_digest", slow)
    yield slow
    slow.release.set()


def test_a_new_file_is_hashed_once_however_many_ask(tmp_path: Path, slow_hash: SlowHash) -> None:
    root = tmp_path / "emberd"
    root.mkdir()
    write_tiny_bert(root / "big.gguf")
    stores = ModelStores(root, None)
    start = threading.Barrier(ASKERS)

    def ask(_: int) -> str:
        start.wait()
        return stores.list()[0].digest

    with ThreadPoolExecutor(ASKERS) as askers:
        digests = list(askers.map(ask, range(ASKERS)))
    assert slow_hash.calls == 1
    assert len(set(digests)) == 1 and len(digests[0]) == 64
    assert stores.resolve("big").digest == digests[0]  # and remembered
    assert slow_hash.calls == 1


def test_listings_waiting_for_a_hash_hold_up_no_embed(
    tmp_path: Path,
    model_files: ModelFiles,
    serve: ServerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stores = make_stores(tmp_path, model_files)
    live = serve(model_stores=stores)
    warm = httpx.post(f"{live.url}/api/embed", json={"model": TINY, "input": "sky"}, timeout=180)
    assert warm.status_code == 200  # loaded and hashed (slow on a busy machine)
    slow = SlowHash(hold_s=DEADLINE_S * 3)
    monkeypatch.setattr(store_module, "file_digest", slow)
    write_tiny_bert(stores.emberd / "big.gguf")  # dropped in: the next listing hashes it
    try:
        with (
            ThreadPoolExecutor(LISTINGS) as listers,
            httpx.Client(base_url=live.url, timeout=DEADLINE_S * 4) as client,
        ):
            waiting = [listers.submit(client.get, "/api/tags") for _ in range(LISTINGS)]
            deadline = time.monotonic() + DEADLINE_S
            while slow.calls == 0:
                assert time.monotonic() < deadline, "no listing began to hash"
                time.sleep(0.01)
            time.sleep(1.1)  # past the engine's cache of resolved names
            quick = httpx.Client(base_url=live.url, timeout=DEADLINE_S)
            embedded = quick.post("/api/embed", json={"model": TINY, "input": "sky"})
            shown = quick.post("/api/show", json={"model": TINY})
            quick.close()
            assert embedded.status_code == 200 and shown.status_code == 200
            assert not any(w.done() for w in waiting)  # the listings still wait
            slow.release.set()
            tags = [w.result() for w in waiting]
        assert all(t.status_code == 200 for t in tags)
        # Each new file (big.gguf, and tiny-cls.gguf, never listed before) once.
        assert sorted(p.name for p in slow.paths) == ["big.gguf", "tiny-cls.gguf"]
        assert "big:latest" in [m["name"] for m in tags[0].json()["models"]]
    finally:
        slow.release.set()
