"""Who may talk to the server: API keys, the Host check, and CORS origins.

Two ASGI middlewares. `Admission`, outermost: the Host check (a loopback
server answers only requests addressed to a loopback name, against DNS
rebinding), the Origin check (browser pages from other origins are
refused) and CORS (the headers that let allowed pages read answers).
`ApiKeyAuth`, further in: API keys.
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
from starlette.middleware.cors import CORSMiddleware
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


class Admission:
    """Who may talk to the server, from one pass over a request's headers.

    - The Host check (`check_host`, for loopback servers): a request whose
      Host is not this machine is refused with 403 (DNS rebinding).
    - The Origin check: a request whose `Origin` is present and not allowed
      is refused with 403. CORS alone only hides the answer from the page: a
      browser sends a `text/plain` POST cross-origin without asking first,
      and the server would do the work. Same-origin requests (the Origin is
      this server's own address) and requests without an Origin pass.
    - CORS: a request with an allowed Origin goes through CORS (preflights
      answered there, the headers that let the page read the answer added).
      One without an Origin is not a browser page's: it skips that layer.
    """

    def __init__(self, app: ASGIApp, origins: Iterable[str], check_host: bool) -> None:
        self.app = app
        self.allowed = re.compile(origin_regex(origins))
        self.check_host = check_host
        self.cors = CORSMiddleware(
            app,
            allow_origin_regex=self.allowed.pattern,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
            allow_headers=["*"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host: bytes | None = None
        origin: bytes | None = None
        for key, value in scope["headers"]:  # the first of each, as Headers.get reads it
            if key == b"host" and host is None:
                host = value
            elif key == b"origin" and origin is None:
                origin = value
        refusal = self._refusal((host or b"").decode("latin-1"), origin)
        if refusal is not None:
            await refuse(scope, receive, send, refusal)
        elif origin is None:
            await self.app(scope, receive, send)
        else:
            await self.cors(scope, receive, send)

    def _refusal(self, host: str, raw_origin: bytes | None) -> Forbidden | None:
        if self.check_host and not is_local_host(host_name(host)):
            return Forbidden("forbidden: host not allowed")
        if raw_origin is None:
            return None
        origin = raw_origin.decode("latin-1")
        if origin in (f"http://{host}", f"https://{host}"):
            return None
        if self.allowed.match(origin) is None:
            log.debug("refused a request from origin %r", origin)
            return Forbidden(ORIGIN_REFUSED.format(origin[:200]))
        return None


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
