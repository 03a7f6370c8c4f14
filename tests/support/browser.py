"""Headless Chromium through ChromeDriver (selenium) for the page's browser tests.

Debian's `chromium` and `chromium-driver` (scripts/test installs them where
apt-get can). Where neither can be found the tests skip and say why, except
under `CI=true`, where a missing browser fails them: CI always runs them.
Paths are given to selenium explicitly, so it never looks for a driver on
the network.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

_T = TypeVar("_T")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
WINDOW = (1280, 860)
# Where a run may also copy its screenshots (the README's come from there).
SCREENSHOTS_VARIABLE = "EMBERD_SCREENSHOTS"


def find_browser() -> tuple[str, str] | None:
    """(browser, chromedriver) paths, or None when either is missing."""
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def require_browser() -> tuple[str, str]:
    """The paths, or a skip saying what is missing (a failure under CI=true)."""
    found = find_browser()
    if found is not None:
        return found
    message = (
        "no Chromium and ChromeDriver on PATH (Debian: apt-get install chromium "
        "chromium-driver): the page's browser tests need them"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI=true requires them")
    pytest.skip(message)


@contextmanager
def chrome() -> Iterator[WebDriver]:
    """A headless Chromium that keeps its console and network logs."""
    browser, driver = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # test machines and containers often run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    session = webdriver.Chrome(options=options, service=Service(driver))
    session.set_page_load_timeout(30)
    try:
        yield session
    finally:
        session.quit()


def wait_for(check: Callable[[], _T | None], what: str, deadline_s: float = 15.0) -> _T:
    """Poll `check` until it returns something truthy; fail naming `what`."""
    end = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def responses(session: WebDriver) -> list[tuple[str, int]]:
    """(URL, status) of every answer the browser got since the last call.

    Read from the raw network events, so an answer that CORS hides from the
    page (a refusal carries no Access-Control-Allow-Origin) is seen as well.
    """
    urls: dict[str, str] = {}
    statuses: dict[str, int] = {}
    for entry in session.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.responseReceivedExtraInfo":
            statuses[params["requestId"]] = params["statusCode"]
    return [(urls[key], status) for key, status in statuses.items() if key in urls]


def screenshot(session: WebDriver, folder: Path, name: str) -> Path:
    """Save the window as `folder/name.png` (and into $EMBERD_SCREENSHOTS when set)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert session.save_screenshot(str(path)), f"no screenshot {path}"
    extra = os.environ.get(SCREENSHOTS_VARIABLE)
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / path.name)
    return path
