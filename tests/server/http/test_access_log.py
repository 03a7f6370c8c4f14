"""The access log: uvicorn's line, written once the response has left."""

from __future__ import annotations

import logging
import re
import time

import pytest

from tests.support.harness import TINY, LiveServer, wait_until


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]


def test_each_request_is_logged_once_in_uvicorns_format(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    assert server.embed({"model": TINY, "input": "sky"}).status_code == 200
    assert server.client.get("/api/nothing-here?x=1").status_code == 404
    wait_until(lambda: len(access_lines(caplog)) >= 2)
    time.sleep(0.1)
    embed, missing = access_lines(caplog)  # one line each: uvicorn's own is off
    assert re.fullmatch(r'127\.0\.0\.1:\d+ - "POST /api/embed HTTP/1\.1" 200', embed)
    assert re.fullmatch(r'127\.0\.0\.1:\d+ - "GET /api/nothing-here\?x=1 HTTP/1\.1" 404', missing)
