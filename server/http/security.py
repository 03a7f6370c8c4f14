"""Who may talk to the server: API keys, the Host check, and CORS origins.

Small ASGI middlewares, applied outermost first: the Host check (a loopback
server answers only requests addressed to a loopback name, against DNS
rebinding), the Origin check (browser pages from other origins are refused),
CORS (the headers that let allowed pages read answers), then API keys.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from emberd.server.http.error_responses import Forbidden, Unauthorized, refuse

log = logging.getLogger("emberd.security")

# Origins every Ollama server allows (browser extensions, desktop shells, local pages).
_LOCAL_ORIGINS = tuple(
    f"{scheme}://{host}{port}"
    for host in ("localhost", "127.0.0.1", "0.0.0.0")
    for scheme in ("http", "https")
    for port in ("", ":*")
)
BUILTIN_ORIGINS: tuple[str, ...] = (
    *_LOCAL_ORIGINS,
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)

_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")

# Refusals say how to fix them: the client sends a key the server was started
# with; an origin is allowed by the variable that lists extra ones.
UNAUTHORIZED = (
    "unauthorized: a valid API key is required "
    "(send Authorization: Bearer KEY with a key from the server's EMBERD_API_KEY)"
)
ORIGIN_REFUSED = (
    "forbidden: origin {!r} not allowed (add it to OLLAMA_ORIGINS where the server starts)"
)


def origin_regex(patterns: Iterable[str]) -> str:
    """One regular expression matching any of the glob patterns (`*` = anything)."""
    alternatives = [".*".join(re.escape(part) for part in p.split("*")) for p in patterns]
    return "^(?:" + "|".join(alternatives) + ")$"


def host_name(header: str) -> str:
    """The host part of a Host header: no port, no IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header[1:]
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header


@functools.lru_cache(maxsize=256)
def is_local_host(name: str) -> bool:
    """Whether a Host names this machine: loopback, private or local names.

    Cached: clients send the same few Host values on every request.
    """
    if name in ("", "localhost") or name.endswith(_LOCAL_SUFFIXES):
        return True
    if name == socket.gethostname().lower():
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


class HostCheck:
    """Refuse requests whose Host is not this machine (DNS rebinding), with 403."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = host_name(Headers(scope=scope).get("host", ""))
            if not is_local_host(host):
                await refuse(scope, receive, send, Forbidden("forbidden: host not allowed"))
                return
        await self.app(scope, receive, send)


class OriginCheck:
    """Refuse, with 403, any request whose `Origin` is present and not allowed.

    CORS alone only hides the answer from the page: a browser sends a
    `text/plain` POST cross-origin without asking first, and the server
    would do the work. Same-origin requests (the Origin is this server's own
    address) and requests without an Origin pass.
    """

    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self.app = app
        self.allowed = re.compile(origin_regex(origins))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Most requests carry no Origin: look for it without building Headers.
        if scope["type"] == "http" and any(key == b"origin" for key, _ in scope["headers"]):
            headers = Headers(scope=scope)
            origin = headers["origin"]
            if not self._allowed(origin, headers.get("host", "")):
                log.debug("refused a request from origin %r", origin)
                await refuse(scope, receive, send, Forbidden(ORIGIN_REFUSED.format(origin[:200])))
                return
        await self.app(scope, receive, send)

    def _allowed(self, origin: str, host: str) -> bool:
        if origin in (f"http://{host}", f"https://{host}"):
            return True
        return self.allowed.match(origin) is not None


def _nothing_else(method: str, path: str) -> bool:
    return False


class ApiKeyAuth:
    """Require `Authorization: Bearer KEY` on every route except `GET|HEAD /`.

    `open_paths(method, path)` names more requests that need no key (the
    page's own files, which a browser fetches without one and which hold no
    data).
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: Iterable[str],
        open_paths: Callable[[str, str], bool] = _nothing_else,
    ) -> None:
        self.app = app
        # An empty key would let `Bearer ` with nothing after it in.
        self.keys = [key.encode() for key in keys if key]
        self.open_paths = open_paths

    def _allowed(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = token.strip().encode()
        # Compare with every key so timing says nothing about which one matched.
        results = [hmac.compare_digest(given, key) for key in self.keys]
        return any(results)

    def _open(self, method: str, path: str) -> bool:
        return (path == "/" and method in ("GET", "HEAD")) or self.open_paths(method, path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        if not self._allowed(header):
            error = Unauthorized(UNAUTHORIZED)
            # WWW-Authenticate is required on a 401 (RFC 9110).
            await refuse(scope, receive, send, error, {"WWW-Authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)
