"""Addresses as `OLLAMA_HOST` describes them, with Ollama's parsing rules.

The server listens on such an address and the command-line client connects
to one; both read it here. Nothing in this module reads the environment.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "OllamaAddress",
    "clean_value",
    "client_url",
    "is_loopback_host",
    "join_host_port",
    "normalise_ip",
    "parse_ollama_address",
    "parse_ollama_host",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11434


def clean_value(value: str) -> str:
    """Trim spaces and surrounding quotes, as Ollama does with its variables."""
    return value.strip().strip("\"'")


@dataclass(frozen=True)
class OllamaAddress:
    """Where a server listens or a client connects, as `OLLAMA_HOST` describes it."""

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        """The base URL, IPv6 hosts in brackets (`http://[::1]:11434`)."""
        return f"{self.scheme}://{join_host_port(self.host, self.port)}"


def join_host_port(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Split `host:port` or `[host]:port` with Go's `net.SplitHostPort` rules.

    Returns None where Go reports an error (no port, too many colons, ...).
    """
    colon = hostport.rfind(":")
    if colon < 0:
        return None
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0 or close + 1 != colon:
            return None
        host, rest_start = hostport[1:close], 1
        if "[" in hostport[rest_start:] or "]" in hostport[close + 1 :]:
            return None
    else:
        host = hostport[:colon]
        if ":" in host or "[" in hostport or "]" in hostport:
            return None
    return host, hostport[colon + 1 :]


def normalise_ip(text: str) -> str | None:
    """The canonical text of an IP address, or None when `text` is not one."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _parse_port(text: str) -> int | None:
    # Go's strconv.ParseInt: optional sign, ASCII digits only.
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    port = int(text)
    return port if 0 <= port <= 65535 else None


def parse_ollama_address(value: str) -> OllamaAddress:
    """Parse an `OLLAMA_HOST` value with Ollama's rules.

    No scheme means http with default port 11434; `http://` defaults to 80
    and `https://` to 443. IPv6 works with or without brackets; a missing or
    invalid port falls back to the default; an empty host means 127.0.0.1;
    any path is ignored. Never raises.
    """
    text = clean_value(value).strip()
    default_port = DEFAULT_PORT
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport = hostport.split("/", 1)[0]
    split = _split_host_port(hostport)
    if split is None:
        host, port_text = DEFAULT_HOST, ""
        bare = hostport[1:-1] if hostport.startswith("[") and hostport.endswith("]") else hostport
        ip = normalise_ip(bare)
        if ip is not None:
            host = ip
        elif hostport:
            host = hostport
    else:
        host, port_text = split
        host = normalise_ip(host) or host or DEFAULT_HOST
    port = _parse_port(port_text)
    return OllamaAddress(scheme=scheme, host=host, port=default_port if port is None else port)


def parse_ollama_host(value: str) -> tuple[str, int]:
    """`(host, port)` from an `OLLAMA_HOST` value; see `parse_ollama_address`."""
    address = parse_ollama_address(value)
    return address.host, address.port


def client_url(value: str) -> str:
    """The base URL a client uses for an address written as `OLLAMA_HOST` accepts it.

    `127.0.0.1:11434`, `localhost`, `http://host:8080` and `[::1]` all work;
    a server listening on every interface (0.0.0.0, ::) is reached on loopback.
    """
    address = parse_ollama_address(value)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address.host, address.host)
    return OllamaAddress(address.scheme, host, address.port).url


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.x, ::1, ::ffff:127.x)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
