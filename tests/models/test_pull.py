"""Pulling from an Ollama-style registry: models.registry, models.pull and POST /api/pull.

The registry is tests/registry_server.py on loopback; the store a temporary
directory; the served model the tiny BERT GGUF, so a pulled model really
loads and embeds.
"""

from __future__ import annotations

import errno
import io
import json
import socket
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from filelock import FileLock, Timeout
from starlette.testclient import TestClient

from emberd.models.cancel import CancelSwitch
from emberd.models.errors import InvalidModelName, ModelNotFound
from emberd.models.names import ModelName
from emberd.models.pull import (
    DigestMismatch,
    PullProgress,
    blob_lock_path,
    partial_path,
    pull_model,
)
from emberd.models.registry import (
    ManifestNotFound,
    PullCancelled,
    RegistryError,
    RegistryUnreachable,
    blob_url,
    is_unreachable,
    manifest_url,
    parse_manifest,
    registry_base_url,
)
from emberd.models.store import ModelStores
from emberd.server.cli.store_verbs import pull_cli
from emberd.server.config import Settings
from tests.support.raw_http import raw_post
from tests.support.registry_server import (
    MANIFEST_MEDIA_TYPE,
    Published,
    RegistryServer,
    digest_of,
    manage_app,
    registry_server,
    serving,
)

PARAMS = {"num_ctx": 64}
NOT_A_BOOL = "Input should be a valid boolean"
PROMPT_S = 5.0  # a cancelled pull lets go of its download within this (a stall lasts longer)


@pytest.fixture
def stores(tmp_path: Path) -> ModelStores:
    return ModelStores(tmp_path / "emberd", None)


def blobs_on_disk(stores: ModelStores) -> set[str]:
    blobs = stores.emberd_dir / "blobs"
    return {p.name for p in blobs.iterdir()} if blobs.is_dir() else set()


def blob_name(digest: str) -> str:
    return digest.replace(":", "-")


# -- URLs and manifests --------------------------------------------------------------


def test_default_host_goes_to_the_configured_registry() -> None:
    name = ModelName.parse("all-minilm")
    base = registry_base_url(name, "http://127.0.0.1:5000/")
    assert base == "http://127.0.0.1:5000"
    assert (
        manifest_url(name, base) == "http://127.0.0.1:5000/v2/library/all-minilm/manifests/latest"
    )
    digest = "sha256:" + "a" * 64
    assert blob_url(name, base, digest) == f"{base}/v2/library/all-minilm/blobs/{digest}"


def test_other_hosts_use_https_unless_insecure() -> None:
    name = ModelName.parse("example.com:5000/me/model:v1")
    assert registry_base_url(name, "https://registry.ollama.ai") == "https://example.com:5000"
    assert registry_base_url(name, "https://x", insecure=True) == "http://example.com:5000"
    assert manifest_url(name, "https://h") == "https://h/v2/me/model/manifests/v1"


def test_manifest_without_a_gguf_layer_is_refused(published: Published) -> None:
    manifest = dict(published.manifest)
    manifest["layers"] = manifest["layers"][1:]
    with pytest.raises(RegistryError, match="no GGUF layer"):
        parse_manifest(json.dumps(manifest).encode())


def test_manifest_with_a_path_for_a_digest_is_refused(published: Published) -> None:
    manifest = json.loads(json.dumps(published.manifest))
    manifest["layers"][0]["digest"] = "../../etc/passwd"
    with pytest.raises(RegistryError, match="invalid digest"):
        parse_manifest(json.dumps(manifest).encode())


# -- a whole pull --------------------------------------------------------------------


def test_pull_stores_the_model_byte_for_byte(
    registry: RegistryServer, published: Published, stores: ModelStores, gguf: bytes
) -> None:
    events: list[PullProgress] = []
    record = pull_model("tiny", stores, registry.url, events.append)

    assert record.name.display == "tiny:latest"
    assert record.path.read_bytes() == gguf
    assert record.params == PARAMS
    assert stores.resolve("tiny").path == record.path
    assert blobs_on_disk(stores) == {
        blob_name(d) for d in (published.model, published.params, published.config)
    }
    manifest_request = registry.state.requests[0]
    assert manifest_request.path == "/v2/library/tiny/manifests/latest"
    assert manifest_request.accept == MANIFEST_MEDIA_TYPE

    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = [e for e in events if e.digest]
    assert [e.digest for e in layers if e.completed == e.total] == [
        published.model,
        published.params,
        published.config,
    ]
    for event in layers:
        assert event.status == f"pulling {event.digest[7:19]}"
        assert 0 <= event.completed <= event.total


def test_progress_lines_leave_out_empty_fields() -> None:
    assert PullProgress("success").to_json() == {"status": "success"}
    assert PullProgress("pulling abc", "sha256:abc", 10, 0).to_json() == {
        "status": "pulling abc",
        "digest": "sha256:abc",
        "total": 10,
    }


def test_blobs_can_come_through_a_redirect(
    registry: RegistryServer, published: Published, stores: ModelStores, gguf: bytes
) -> None:
    registry.state.redirect_blobs = True
    assert pull_model("tiny", stores, registry.url).path.read_bytes() == gguf
    assert any(r.status == 307 for r in registry.state.requests)


def test_unknown_model_is_not_found_and_writes_nothing(
    registry: RegistryServer, stores: ModelStores
) -> None:
    with pytest.raises(ManifestNotFound) as caught:
        pull_model("nothing-here", stores, registry.url)
    assert str(caught.value) == "pull model manifest: file does not exist"
    assert not stores.emberd_dir.exists() or not any(stores.emberd_dir.iterdir())


def test_bad_name_is_refused_before_any_request(
    registry: RegistryServer, stores: ModelStores
) -> None:
    with pytest.raises(InvalidModelName):
        pull_model("../evil", stores, registry.url)
    assert registry.state.requests == []


def test_unreachable_registry_is_a_registry_error(stores: ModelStores) -> None:
    with registry_server() as gone:
        url = gone.url
    with pytest.raises(RegistryError, match=r"^cannot reach the registry "):
        pull_model("tiny", stores, url, retries=0)


# -- integrity, resume, skipping ------------------------------------------------------


def test_corrupted_blob_is_deleted_and_no_manifest_written(
    registry: RegistryServer, published: Published, stores: ModelStores, gguf: bytes
) -> None:
    registry.state.corrupt.add(published.model)
    with pytest.raises(DigestMismatch) as caught:
        pull_model("tiny", stores, registry.url)
    corrupted = bytes([gguf[0] ^ 0xFF]) + gguf[1:]
    assert str(caught.value) == (
        "digest mismatch, file must be downloaded again: "
        f"want {published.model}, got {digest_of(corrupted)}"
    )
    with pytest.raises(ModelNotFound):
        stores.resolve("tiny")
    on_disk = blobs_on_disk(stores)
    assert blob_name(published.model) not in on_disk
    assert not any(name.endswith("-partial") for name in on_disk)


def test_dropped_connection_fails_then_resumes_with_range(
    registry: RegistryServer, published: Published, stores: ModelStores, gguf: bytes
) -> None:
    cut = len(gguf) // 3
    registry.state.drop_after[published.model] = cut
    with pytest.raises(RegistryError, match="interrupted"):
        pull_model("tiny", stores, registry.url, retries=0)
    partial = partial_path(stores, published.model)
    assert partial.read_bytes() == gguf[:cut]
    with pytest.raises(ModelNotFound):
        stores.resolve("tiny")

    events: list[PullProgress] = []
    record = pull_model("tiny", stores, registry.url, events.append, retries=0)

    assert record.path.read_bytes() == gguf
    assert not partial.exists()
    first, second = registry.state.blob_requests(published.model)
    assert (first.range, first.sent) == (None, cut)
    assert (second.range, second.status) == (f"bytes={cut}-", 206)
    assert second.sent == len(gguf) - cut
    resumed = [e for e in events if e.digest == published.model]
    assert resumed[0].completed == cut  # progress starts where the file stopped


def test_dropped_connection_is_retried_within_one_pull(
    registry: RegistryServer, published: Published, stores: ModelStores, gguf: bytes
) -> None:
    registry.state.drop_after[published.model] = 1000
    assert pull_model("tiny", stores, registry.url).path.read_bytes() == gguf
    ranges = [r.range for r in registry.state.blob_requests(published.model)]
    assert ranges == [None, "bytes=1000-"]


def test_server_ignoring_range_restarts_cleanly(
    registry: RegistryServer, published: Published, stores: ModelStores, gguf: bytes
) -> None:
    registry.state.drop_after[published.model] = 5000
    with pytest.raises(RegistryError):
        pull_model("tiny", stores, registry.url, retries=0)
    registry.state.ignore_range = True
    assert pull_model("tiny", stores, registry.url, retries=0).path.read_bytes() == gguf
    second = registry.state.blob_requests(published.model)[-1]
    assert (second.range, second.status, second.sent) == ("bytes=5000-", 200, len(gguf))


def test_partial_longer_than_the_blob_starts_over(
    registry: RegistryServer, published: Published, stores: ModelStores, gguf: bytes
) -> None:
    partial = partial_path(stores, published.model)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * (len(gguf) + 10))
    assert pull_model("tiny", stores, registry.url).path.read_bytes() == gguf
    assert [r.range for r in registry.state.blob_requests(published.model)] == [None]


def test_present_blobs_are_skipped(
    registry: RegistryServer, published: Published, stores: ModelStores, gguf: bytes
) -> None:
    pull_model("tiny", stores, registry.url)
    registry.state.publish("library/tiny", "v2", gguf, {"num_ctx": 32})
    registry.state.clear_requests()

    events: list[PullProgress] = []
    record = pull_model("tiny:v2", stores, registry.url, events.append)

    assert record.params == {"num_ctx": 32}
    assert registry.state.blob_requests(published.model) == []  # the GGUF was already there
    fetched = [r.path for r in registry.state.requests if "/blobs/" in r.path]
    new_params = digest_of(json.dumps({"num_ctx": 32}).encode())
    assert fetched == [f"/v2/library/tiny/blobs/{new_params}"]  # the config is shared too
    skipped = [e for e in events if e.digest == published.model]
    assert [(e.completed, e.total) for e in skipped] == [(len(gguf), len(gguf))]


def test_concurrent_pulls_fetch_each_blob_once(
    registry: RegistryServer, published: Published, stores: ModelStores, gguf: bytes
) -> None:
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            pull_model("tiny", stores, registry.url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    for digest in (published.model, published.params, published.config):
        assert len(registry.state.blob_requests(digest)) == 1
    assert stores.resolve("tiny").path.read_bytes() == gguf


def test_cancelled_pull_keeps_its_partial(
    registry: RegistryServer, published: Published, stores: ModelStores
) -> None:
    cancel = CancelSwitch()

    def progress(event: PullProgress) -> None:
        if event.digest == published.model and event.completed:
            cancel.set()

    with pytest.raises(PullCancelled):
        pull_model("tiny", stores, registry.url, progress, cancel=cancel)
    # What it downloaded is kept for the next pull; an empty partial would not be.
    assert partial_path(stores, published.model).stat().st_size > 0
    with pytest.raises(ModelNotFound):
        stores.resolve("tiny")


# -- the command line ----------------------------------------------------------------


def test_pull_cli_prints_a_line_per_step_and_layer(
    registry: RegistryServer, published: Published, stores: ModelStores
) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert pull_cli("tiny", stores, registry.url, out=out, err=err) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "pulling manifest"
    assert lines[1].startswith(f"pulling {published.model[7:19]}: 100% of ")
    assert lines[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    assert len(lines) == 3 + 3 + 1
    assert err.getvalue() == ""


def test_pull_cli_reports_errors(registry: RegistryServer, stores: ModelStores) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert pull_cli("missing", stores, registry.url, out=out, err=err) == 1
    assert err.getvalue() == "Error: pull model manifest: file does not exist\n"


# -- POST /api/pull ------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path, registry: RegistryServer) -> Iterator[TestClient]:
    env = {
        "HOME": str(tmp_path),
        "EMBERD_MODELS": str(tmp_path / "emberd"),
        "OLLAMA_MODELS": str(tmp_path / "ollama"),
        "EMBERD_REGISTRY": registry.url,
    }
    with TestClient(manage_app(Settings.from_env(env)), base_url="http://127.0.0.1") as test_client:
        yield test_client


def stream_lines(client: TestClient, body: dict[str, Any]) -> tuple[int, str, list[Any]]:
    with client.stream("POST", "/api/pull", json=body) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
        return response.status_code, response.headers["content-type"], lines


def test_api_pull_streams_progress_in_order(client: TestClient, published: Published) -> None:
    status, content_type, lines = stream_lines(client, {"model": "tiny"})
    assert status == 200
    assert content_type == "application/x-ndjson"
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-3:] == [
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    done = [line["digest"] for line in lines if line.get("completed") == line.get("total", -1)]
    assert done == [published.model, published.params, published.config]
    assert client.post("/api/show", json={"model": "tiny"}).status_code == 200


def test_api_pull_without_streaming_answers_once_and_the_model_embeds(
    client: TestClient, published: Published
) -> None:
    response = client.post("/api/pull", json={"name": "tiny", "stream": False})
    assert response.status_code == 200
    assert response.json() == {"status": "success"}
    tags = client.get("/api/tags").json()["models"]
    assert [m["name"] for m in tags] == ["tiny:latest"]
    embedded = client.post("/api/embed", json={"model": "tiny", "input": "why is the sky blue"})
    assert embedded.status_code == 200, embedded.text
    assert len(embedded.json()["embeddings"][0]) == 32


def test_api_pull_of_unknown_model(client: TestClient, registry: RegistryServer) -> None:
    response = client.post("/api/pull", json={"model": "nope", "stream": False})
    assert response.status_code == 404
    assert response.json() == {"error": "pull model manifest: file does not exist"}

    status, _, lines = stream_lines(client, {"model": "nope"})
    assert status == 200
    assert lines == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]


def test_api_pull_error_mid_stream_is_the_last_line(
    client: TestClient, registry: RegistryServer, published: Published
) -> None:
    registry.state.corrupt.add(published.config)
    status, _, lines = stream_lines(client, {"model": "tiny"})
    assert status == 200
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-1]["error"].startswith(
        f"digest mismatch, file must be downloaded again: want {published.config}, got sha256:"
    )
    assert all("error" not in line for line in lines[:-1])
    response = client.post("/api/pull", json={"model": "tiny", "stream": False})
    assert response.status_code == 500
    assert response.json()["error"].startswith("digest mismatch")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "model is required"),
        ({"model": ""}, "model is required"),
        ({"model": "../x"}, "invalid model name"),
        ({"model": "tiny", "stream": "no"}, f'invalid value for "stream": {NOT_A_BOOL}'),
    ],
)
def test_api_pull_bad_requests(client: TestClient, body: dict[str, Any], message: str) -> None:
    response = client.post("/api/pull", json=body)
    assert response.status_code == 400
    assert response.json() == {"error": message}


@dataclass
class StalledPull:
    """A server whose registry stalls the model blob until `release` is set."""

    settings: Settings
    stores: ModelStores
    partial: Path  # where the download is kept while unfinished
    release: threading.Event


@pytest.fixture
def stalled(tmp_path: Path, registry: RegistryServer, published: Published) -> StalledPull:
    release = threading.Event()
    registry.state.stall[published.model] = (1000, release)
    env = {
        "HOME": str(tmp_path),
        "EMBERD_MODELS": str(tmp_path / "emberd"),
        "OLLAMA_MODELS": str(tmp_path / "ollama"),
        "EMBERD_REGISTRY": registry.url,
    }
    stores = ModelStores(tmp_path / "emberd", None)
    return StalledPull(
        Settings.from_env(env), stores, partial_path(stores, published.model), release
    )


def test_client_leaving_the_stream_stops_the_pull(
    stalled: StalledPull, registry: RegistryServer, published: Published, gguf: bytes
) -> None:
    stores, partial, release = stalled.stores, stalled.partial, stalled.release
    try:
        with serving(manage_app(stalled.settings)) as (url, _):
            with httpx.stream("POST", f"{url}/api/pull", json={"model": "tiny"}) as response:
                for line in response.iter_lines():
                    if published.model in line:
                        # Leave once the download is stalling (leaving, here, closes).
                        wait_for(lambda: published.model not in registry.state.stall)
                        break
            # The registry holds back the rest of the blob until `release`: only
            # the client's leaving can stop the pull, and at once.
            wait_for(lambda: _pull_stopped(partial), seconds=PROMPT_S)
            release.set()
    finally:
        release.set()
    assert stores.blob_path(published.model).exists() is False
    with pytest.raises(ModelNotFound):
        stores.resolve("tiny")
    assert pull_model("tiny", stores, registry.url).path.read_bytes() == gguf


def test_client_leaving_a_single_answer_pull_stops_it(
    stalled: StalledPull, registry: RegistryServer, published: Published
) -> None:
    stores, partial, release = stalled.stores, stalled.partial, stalled.release
    try:
        with serving(manage_app(stalled.settings)) as (url, _):
            body = b'{"model": "tiny", "stream": false}'
            with raw_post(url, "/api/pull", body):  # the client goes once the download began
                wait_for(lambda: published.model not in registry.state.stall)  # it is stalling
            wait_for(lambda: _pull_stopped(partial), seconds=PROMPT_S)
            release.set()
    finally:
        release.set()
    assert stores.blob_path(published.model).exists() is False


def _pull_stopped(partial: Path) -> bool:
    """Whether no pull holds the lock on the partial download any more."""
    lock = FileLock(blob_lock_path(partial), thread_local=False)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        return False
    lock.release()
    return True


def wait_for(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_unreachable_registry_fails_once_naming_it_and_the_setting(
    stores: ModelStores, caplog: pytest.LogCaptureFixture
) -> None:
    with registry_server() as gone:
        url = gone.url
    with pytest.raises(RegistryUnreachable) as info:
        pull_model("tiny", stores, url)  # the default retries: none is spent on this
    assert str(info.value).startswith(f"cannot reach the registry {url} (")
    assert str(info.value).endswith(
        "pulling needs it; EMBERD_REGISTRY (or --registry) chooses another"
    )
    assert "trying again" not in caplog.text


def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    lookup = urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert is_unreachable(lookup)
    reset = urllib.error.URLError(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert not is_unreachable(reset)
    assert not is_unreachable(TimeoutError("timed out"))
