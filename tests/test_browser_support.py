"""Where no browser can be had, the browser tests skip, except under CI=true."""

from __future__ import annotations

import pytest

from tests.support import browser


def test_a_missing_browser_skips_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CI", raising=False)
    assert browser.find_browser() is None
    with pytest.raises(pytest.skip.Exception, match="no Chromium and ChromeDriver"):
        browser.require_browser()


def test_under_ci_a_missing_browser_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true requires them"):
        browser.require_browser()
