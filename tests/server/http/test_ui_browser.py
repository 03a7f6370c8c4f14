"""The page in a real browser: headless Chromium against a live emberd on loopback.

The page is opened as `http://emberd.localhost:PORT` (Chromium sends
`*.localhost` to loopback): an origin that no allowed-origin pattern
matches, so its requests pass only as same-origin ones. Screenshots of
each view land under the test's tmp path (and in $EMBERD_SCREENSHOTS when
set).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.support.browser import chrome, responses, screenshot, wait_for
from tests.support.harness import (
    TINY,
    LiveServer,
    ModelFiles,
    make_stores,
    running_server,
    settings_for,
)
from tests.support.registry_server import RegistryServer, registry_server
from tests.support.tiny_model import write_tiny_bert
from tests.support.tiny_reranker import write_xlmr_reranker, xlmr_weights

pytestmark = pytest.mark.slow

RERANKER = "xlmr-reranker"
PULLED = "pulled"
TEXTS = ["the sky is blue", "the sea is blue", "hello world"]
QUERY = "why is the sky blue"
PASSAGES = ["hello world", "the sky is blue", "green grass and red fire", "the sea is cold"]


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with registry_server() as server:
        gguf = write_tiny_bert(tmp_path_factory.mktemp("pull") / "pulled.gguf", seed=3)
        server.state.publish(f"library/{PULLED}", "latest", gguf.read_bytes())
        yield server


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, model_files: ModelFiles, registry: RegistryServer
) -> Iterator[LiveServer]:
    stores = make_stores(tmp_path_factory.mktemp("ui-stores"), model_files)
    write_xlmr_reranker(stores.emberd / f"{RERANKER}.gguf", xlmr_weights(seed=7))
    settings = settings_for(stores, {"EMBERD_REGISTRY": registry.url})
    with running_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chrome() as session:
        yield session


def page_url(live: LiveServer, path: str) -> str:
    return live.url.replace("127.0.0.1", "emberd.localhost") + path


def open_view(browser: WebDriver, live: LiveServer, view: str) -> None:
    browser.get(page_url(live, f"/ui/#{view}"))
    wait_for(lambda: "running" in browser.find_element(By.ID, "status").text, "the page to connect")


def click(browser: WebDriver, selector: str) -> None:
    """Click the element `selector` finds, finding it again if the page redrew it meanwhile."""

    def clicked() -> bool:
        try:
            browser.find_element(By.CSS_SELECTOR, selector).click()
        except (StaleElementReferenceException, NoSuchElementException):
            return False
        return True

    wait_for(clicked, selector)


def loaded_rows(browser: WebDriver) -> dict[str, list[str]]:
    """The loaded-models table, read in one go (the page may redraw it at any time)."""
    rows: dict[str, list[str]] = browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('#running tbody tr'),"
        " (row) => [row.dataset.model, Array.from(row.cells, (cell) => cell.innerText)]));"
    )
    return rows


def severe_console_entries(browser: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_page_lists_the_model_an_embed_loaded(
    browser: WebDriver, live: LiveServer, shots: Path
) -> None:
    live.post_ok("/api/embed", {"model": TINY, "input": "warm up"})
    open_view(browser, live, "models")
    rows = wait_for(lambda: loaded_rows(browser).get("tiny:latest"), "tiny in the loaded list")
    ps = live.ps()[0]
    assert rows[0] == "tiny:latest"
    assert rows[1] == "CPU"  # no GPU layers on the test machine
    assert rows[3] == f"{ps['context_length']} tokens"
    assert rows[4].startswith("in 4:") or rows[4].startswith("in 5:")  # keep_alive 5m
    available = browser.find_elements(By.CSS_SELECTOR, "#available tbody tr")
    names = [row.get_attribute("data-model") for row in available]
    listed = [m["name"] for m in live.client.get("/api/tags").json()["models"]]
    assert names == listed
    sources = {row.get_attribute("data-model"): row.text for row in available}
    assert "dropped file" in sources["tiny:latest"]
    assert "Ollama store" in sources["ollama-tiny:latest"]
    assert "rerank" in sources[f"{RERANKER}:latest"]
    screenshot(browser, shots, "models")
    assert severe_console_entries(browser) == []


def test_the_heatmap_holds_the_cosines_of_api_embed(
    browser: WebDriver, live: LiveServer, shots: Path
) -> None:
    open_view(browser, live, "playground")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#play-model option"), "models")
    Select(browser.find_element(By.ID, "play-model")).select_by_value("tiny:latest")
    box = browser.find_element(By.ID, "play-texts")
    box.clear()
    box.send_keys("\n".join(TEXTS))
    browser.find_element(By.ID, "play-run").click()
    cells = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#heatmap td.cell"), "the heatmap"
    )
    vectors = np.array(live.post_ok("/api/embed", {"model": TINY, "input": TEXTS})["embeddings"])
    expected = vectors @ vectors.T  # normalised vectors: the dot product is the cosine
    assert len(cells) == len(TEXTS) ** 2
    for cell in cells:
        i, j = int(cell.get_attribute("data-i") or -1), int(cell.get_attribute("data-j") or -1)
        value = float(cell.get_attribute("data-value") or "nan")
        assert value == pytest.approx(expected[i, j], abs=1e-5), (i, j)
        assert cell.text == f"{expected[i, j]:.3f}"
    facts = browser.find_element(By.ID, "embed-facts").text
    assert f"{len(TEXTS)} vectors of {vectors.shape[1]} dimensions" in facts
    assert "tokens" in facts
    screenshot(browser, shots, "playground-embed")


def test_a_rerank_orders_passages_as_api_rerank(
    browser: WebDriver, live: LiveServer, shots: Path
) -> None:
    open_view(browser, live, "playground")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#play-model option"), "models")
    Select(browser.find_element(By.ID, "play-model")).select_by_value(f"{RERANKER}:latest")
    query = browser.find_element(By.ID, "play-query")
    query.clear()
    query.send_keys(QUERY)
    passages = browser.find_element(By.ID, "play-passages")
    passages.clear()
    passages.send_keys("\n".join(PASSAGES))
    button = browser.find_element(By.ID, "play-run")
    assert button.text == "Rerank"
    button.click()
    items = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#ranked li"), "the ranking")
    answer = live.post_ok("/api/rerank", {"model": RERANKER, "query": QUERY, "documents": PASSAGES})
    assert [int(li.get_attribute("data-index") or -1) for li in items] == [
        r["index"] for r in answer["results"]
    ]
    for li, result in zip(items, answer["results"], strict=True):
        score = float(li.get_attribute("data-score") or "nan")
        assert score == pytest.approx(result["relevance_score"], abs=1e-6)
        assert PASSAGES[result["index"]] in li.text
    bars = [b.size["width"] for b in browser.find_elements(By.CSS_SELECTOR, ".score-bar")]
    assert bars == sorted(bars, reverse=True) and bars[0] > bars[-1]
    screenshot(browser, shots, "playground-rerank")


def test_the_activity_view_charts_each_model(
    browser: WebDriver, live: LiveServer, shots: Path
) -> None:
    for _ in range(5):
        live.post_ok("/api/embed", {"model": TINY, "input": TEXTS})
    open_view(browser, live, "activity")
    lines = wait_for(
        lambda: browser.execute_script(
            "return document.querySelectorAll("
            "'.model-card[data-model=\"tiny:latest\"] svg polyline').length"
        ),
        "the tiny model's charts",
    )
    assert lines == 5  # two throughput lines, two latency lines, one of tokens
    wait_for(lambda: float(browser.find_element(By.ID, "t-tps").text) > 0, "texts per second")
    screenshot(browser, shots, "activity")


def test_load_and_unload_from_the_page(browser: WebDriver, live: LiveServer) -> None:
    open_view(browser, live, "models")
    click(browser, f'#available tr[data-model="{RERANKER}:latest"] button')
    wait_for(lambda: f"{RERANKER}:latest" in loaded_rows(browser), "the reranker to load")
    assert f"{RERANKER}:latest" in live.loaded_names()
    click(browser, f'#running tr[data-model="{RERANKER}:latest"] button')
    wait_for(lambda: f"{RERANKER}:latest" not in loaded_rows(browser), "the reranker to go")
    assert f"{RERANKER}:latest" not in live.loaded_names()


def test_a_pull_shows_progress_and_lists_the_model(
    browser: WebDriver, live: LiveServer, shots: Path
) -> None:
    open_view(browser, live, "models")
    browser.find_element(By.ID, "pull-name").send_keys(PULLED)
    click(browser, "#pull-form button")
    wait_for(
        lambda: "success" in browser.find_element(By.ID, "pull-status").text, "the pull to end"
    )
    fill = browser.find_element(By.ID, "pull-fill")
    track = browser.find_element(By.CSS_SELECTOR, "#pull-progress .bar")
    # A full bar, once its short width transition has run.
    wait_for(lambda: fill.size["width"] >= track.size["width"] - 2, "a full progress bar")
    pulled = f'#available tr[data-model="{PULLED}:latest"]'
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, pulled), "the pulled model listed")
    row = browser.find_element(By.CSS_SELECTOR, pulled)
    assert "emberd store" in row.text
    screenshot(browser, shots, "pull")


def test_docs_render_the_openapi_document(
    browser: WebDriver, live: LiveServer, shots: Path
) -> None:
    browser.get(page_url(live, "/docs"))
    blocks = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"), "Swagger UI"
    )
    shown = {block.get_attribute("data-path") for block in blocks}
    documented = set(live.client.get("/openapi.json").json()["paths"])
    assert shown == documented
    screenshot(browser, shots, "docs")
    # The vendored bundle runs under the page's Content-Security-Policy.
    assert severe_console_entries(browser) == []


class _ForeignPage(BaseHTTPRequestHandler):
    """A page from another origin that posts to emberd as a form or script could."""

    target = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        script = (
            f"fetch('{self.target}/api/embed', {{method: 'POST', headers: "
            "{'Content-Type': 'text/plain'}, body: JSON.stringify({model: 'tiny', input: 'x'})})"
            ".then(r => { document.title = 'status ' + r.status; })"
            ".catch(() => { document.title = 'refused'; });"
        )
        body = f"<!doctype html><title>waiting</title><script>{script}</script>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_foreign_origin_page_still_gets_403(browser: WebDriver, live: LiveServer) -> None:
    handler = type("Foreign", (_ForeignPage,), {"target": live.url})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        responses(browser)  # forget earlier traffic
        browser.get(f"http://foreign.localhost:{httpd.server_address[1]}/")
        wait_for(lambda: browser.title != "waiting", "the foreign page's request")
        assert browser.title == "refused"  # no CORS headers on a refusal: the page reads nothing
        answers = [status for url, status in responses(browser) if url == f"{live.url}/api/embed"]
        assert answers == [403]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_with_api_keys_the_page_asks_for_one_and_keeps_it_for_the_tab(
    browser: WebDriver, model_files: ModelFiles, tmp_path: Path, shots: Path
) -> None:
    stores = make_stores(tmp_path / "stores", model_files)
    with running_server(settings_for(stores, {"EMBERD_API_KEY": "s3cret"})) as keyed:
        browser.get(page_url(keyed, "/ui/#models"))
        dialog = wait_for(
            lambda: [d for d in browser.find_elements(By.ID, "key-dialog") if d.is_displayed()],
            "the key dialog",
        )[0]
        screenshot(browser, shots, "api-key")
        dialog.find_element(By.ID, "key-input").send_keys("s3cret")
        dialog.find_element(By.CSS_SELECTOR, "button").click()
        wait_for(lambda: "running" in browser.find_element(By.ID, "status").text, "the page")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#available tbody tr"), "models")
        assert browser.execute_script("return sessionStorage.getItem('emberd-api-key')") == "s3cret"
        assert browser.execute_script("return localStorage.length") == 0
        assert browser.get_cookies() == []
        # The reference in the same tab fetches /openapi.json with the tab's key.
        browser.get(page_url(keyed, "/docs"))
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock"), "Swagger UI")
        # A new tab starts without the key.
        browser.switch_to.new_window("tab")
        try:
            browser.get(page_url(keyed, "/ui/"))
            assert browser.execute_script("return sessionStorage.length") == 0
        finally:
            browser.close()
            browser.switch_to.window(browser.window_handles[0])
