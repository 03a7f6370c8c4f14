"""Settings: the one place that reads the environment.

Every setting has an environment variable and a flag on `emberd serve`; a
flag overrides its variable. Ollama's variables (`OLLAMA_HOST`,
`OLLAMA_MODELS`, `OLLAMA_KEEP_ALIVE`, ...) keep Ollama's meaning so an
existing set-up carries over; emberd's own use the `EMBERD_` prefix.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

from server.durations import DurationError, parse_keep_alive

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "LOG_LEVELS",
    "SOURCES",
    "ClientConfig",
    "ConfigError",
    "OllamaAddress",
    "Settings",
    "is_loopback_host",
    "join_host_port",
    "parse_ollama_address",
    "parse_ollama_host",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11434
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

_T = TypeVar("_T")


class ConfigError(ValueError):
    """A setting with a value that cannot be used; the message names its variable."""


def _clean(value: str) -> str:
    """Trim spaces and surrounding quotes, as Ollama does with its variables."""
    return value.strip().strip("\"'")


# ---------------------------------------------------------------------------
# OLLAMA_HOST


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


def _normalise_ip(text: str) -> str | None:
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
    text = _clean(value).strip()
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
        ip = _normalise_ip(bare)
        if ip is not None:
            host = ip
        elif hostport:
            host = hostport
    else:
        host, port_text = split
        host = _normalise_ip(host) or host or DEFAULT_HOST
    port = _parse_port(port_text)
    return OllamaAddress(scheme=scheme, host=host, port=default_port if port is None else port)


def parse_ollama_host(value: str) -> tuple[str, int]:
    """`(host, port)` from an `OLLAMA_HOST` value; see `parse_ollama_address`."""
    address = parse_ollama_address(value)
    return address.host, address.port


# ---------------------------------------------------------------------------
# Where each setting comes from, and how its text is read

# field -> (flag on `emberd serve`, environment variable)
SOURCES: dict[str, tuple[str, str | None]] = {
    "host": ("--host", "OLLAMA_HOST"),
    "port": ("--port", "OLLAMA_HOST"),
    "models_dir": ("--models", "EMBERD_MODELS"),
    "ollama_models_dir": ("--ollama-models", "OLLAMA_MODELS"),
    "keep_alive": ("--keep-alive", "OLLAMA_KEEP_ALIVE"),
    "max_loaded_models": ("--max-loaded-models", "OLLAMA_MAX_LOADED_MODELS"),
    "max_queue": ("--max-queue", "OLLAMA_MAX_QUEUE"),
    "context_length": ("--context-length", "OLLAMA_CONTEXT_LENGTH"),
    "num_thread": ("--num-thread", "EMBERD_NUM_THREAD"),
    "origins": ("--origin", "OLLAMA_ORIGINS"),
    "api_keys": ("--api-key", "EMBERD_API_KEY"),
    "default_model": ("--default-model", "EMBERD_DEFAULT_MODEL"),
    "registry": ("--registry", "EMBERD_REGISTRY"),
    "log_level": ("--log-level", "EMBERD_LOG_LEVEL"),
    "max_body_size": ("--max-body-size", "EMBERD_MAX_BODY_SIZE"),
    "max_inputs": ("--max-inputs", "EMBERD_MAX_INPUTS"),
    "max_request_tokens": ("--max-request-tokens", "EMBERD_MAX_REQUEST_TOKENS"),
    "allow_token_input": ("--allow-token-input", "EMBERD_ALLOW_TOKEN_INPUT"),
    "shutdown_grace": ("--shutdown-grace", "EMBERD_SHUTDOWN_GRACE"),
}

_INTEGER = re.compile(r"[+-]?[0-9]+")


def _get(env: Mapping[str, str], name: str) -> str | None:
    """The cleaned value of a variable, None when unset or empty."""
    raw = env.get(name)
    if raw is None:
        return None
    return _clean(raw) or None


def _read_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


_SIZE = re.compile(r"([0-9]+)\s*([kmg]i?b?|b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9,
               "ki": 2**10, "mi": 2**20, "gi": 2**30}


def _read_size(name: str, value: object) -> int:
    """A size in bytes: `33554432`, `32MiB`, `64MB`, `512k` (k/M/G decimal, Ki/Mi/Gi binary)."""
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif match is not None:
        unit = (match.group(2) or "").lower().removesuffix("b")
        size = int(match.group(1)) * _SIZE_UNITS[unit]
    else:
        raise ConfigError(f"{name}: expected a size such as 33554432 or 32MiB, got {value!r}")
    if size < 1:
        raise ConfigError(f"{name}: must be at least 1 byte, got {value!r}")
    return size


_TRUE = ("1", "t", "true", "y", "yes", "on")
_FALSE = ("0", "f", "false", "n", "no", "off")


def _read_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else ""
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def _read_seconds(name: str, value: object) -> float:
    """A non-negative duration: whole seconds (`10`) or a Go duration (`1m30s`)."""
    seconds = _read_keep_alive(name, value)
    if seconds < 0 or math.isinf(seconds):
        raise ConfigError(f"{name}: expected a finite duration of 0 or more, got {value!r}")
    return seconds


def _read_max_loaded(name: str, value: object) -> int:
    # Ollama reads 0 as "choose for me"; here that is the default of 3.
    return _read_int(name, value, 0) or 3


def _read_keep_alive(name: str, value: object) -> float:
    """Integer strings are seconds (as Ollama reads the variable), other strings Go durations."""
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value)
    try:
        seconds = parse_keep_alive(value)
    except DurationError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if seconds is None:
        raise ConfigError(f"{name}: a duration is required")
    return seconds


def _read_path(name: str, value: object, home: Path) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise ConfigError(f"{name}: expected a directory, got {value!r}")
    text = str(value)
    if text == "~" or text.startswith(("~/", "~\\")):
        return home / text[2:]
    return Path(text)


def _read_list(name: str, value: object) -> tuple[str, ...]:
    """A comma-separated variable, or a flag given once per item."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
    return tuple(item.strip() for item in items if item.strip())


def _read_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}: expected a non-empty value, got {value!r}")
    return value.strip()


def _read_registry(name: str, value: object) -> str:
    text = _read_text(name, value)
    if not re.match(r"https?://[^/\s]+", text):
        raise ConfigError(f"{name}: expected an http:// or https:// URL, got {value!r}")
    return text.rstrip("/")


def _read_log_level(name: str, value: object) -> str:
    level = _read_text(name, value).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name}: expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _log_level_from_debug(text: str) -> str:
    """Ollama's OLLAMA_DEBUG: a true boolean or 1 is debug, 2 or more is trace."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return "debug"
    if _INTEGER.fullmatch(text) and int(text) >= 2:
        return "trace"
    return "info"


def _read_host(name: str, value: object) -> str:
    text = _read_text(name, value)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return _normalise_ip(text) or text


def _read_port(name: str, value: object) -> int:
    port = _read_int(name, value, 0)
    if port > 65535:
        raise ConfigError(f"{name}: expected a port number from 0 to 65535, got {port}")
    return port


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME") or env.get("USERPROFILE")
    return Path(home) if home else Path.home()


class _Sources:
    """Looks a field up in the flags first, then in its variable."""

    def __init__(self, env: Mapping[str, str], flags: Mapping[str, object]) -> None:
        self._env = env
        self._flags = {key: value for key, value in flags.items() if value is not None}

    def flag(self, field: str) -> object | None:
        """The flag's value, None when it was not given."""
        return self._flags.get(field)

    def find(self, field: str) -> tuple[str, object] | None:
        """(name to blame in errors, raw value), or None when neither is set."""
        flag, variable = SOURCES[field]
        if field in self._flags:
            return flag, self._flags[field]
        value = _get(self._env, variable) if variable else None
        return (variable, value) if variable and value is not None else None

    def read(self, field: str, reader: Callable[[str, object], _T], default: _T) -> _T:
        found = self.find(field)
        return default if found is None else reader(*found)


# ---------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Settings:
    """Everything the server is configured with.

    Build it with `Settings.from_env`; constructing it directly (as tests do)
    uses the defaults below and reads nothing.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    models_dir: Path = Path.home() / ".emberd" / "models"
    ollama_models_dir: Path = Path.home() / ".ollama" / "models"
    keep_alive: float = 300.0
    max_loaded_models: int = 3
    max_queue: int = 512
    context_length: int = 4096
    num_thread: int = os.cpu_count() or 1
    origins: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()
    default_model: str = "all-minilm"
    registry: str = "https://registry.ollama.ai"
    log_level: str = "info"
    max_body_size: int = 32 * 2**20
    max_inputs: int = 2048
    max_request_tokens: int = 300_000
    allow_token_input: bool = False
    shutdown_grace: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read the environment (default `os.environ`) and apply flag overrides.

        Overrides are keyword arguments named like the fields; None means the
        flag was not given. Raises ConfigError, naming the variable or flag,
        for a value that cannot be used.
        """
        env = os.environ if env is None else env
        unknown = set(overrides) - {field.name for field in fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        src = _Sources(env, overrides)
        home = _home(env)

        def read_path(name: str, value: object) -> Path:
            return _read_path(name, value, home)

        # Both come from OLLAMA_HOST; each flag replaces its half.
        address = parse_ollama_address(_get(env, "OLLAMA_HOST") or "")
        host_flag, port_flag = src.flag("host"), src.flag("port")
        return cls(
            host=address.host if host_flag is None else _read_host("--host", host_flag),
            port=address.port if port_flag is None else _read_port("--port", port_flag),
            models_dir=src.read("models_dir", read_path, home / ".emberd" / "models"),
            ollama_models_dir=src.read("ollama_models_dir", read_path, home / ".ollama" / "models"),
            keep_alive=src.read("keep_alive", _read_keep_alive, 300.0),
            max_loaded_models=src.read("max_loaded_models", _read_max_loaded, 3),
            max_queue=src.read("max_queue", lambda n, v: _read_int(n, v, 1), 512),
            context_length=src.read("context_length", lambda n, v: _read_int(n, v, 1), 4096),
            num_thread=src.read("num_thread", lambda n, v: _read_int(n, v, 1), os.cpu_count() or 1),
            origins=src.read("origins", _read_list, ()),
            api_keys=src.read("api_keys", _read_list, ()),
            default_model=src.read("default_model", _read_text, "all-minilm"),
            registry=src.read("registry", _read_registry, "https://registry.ollama.ai"),
            log_level=src.read(
                "log_level",
                _read_log_level,
                _log_level_from_debug(_get(env, "OLLAMA_DEBUG") or ""),
            ),
            max_body_size=src.read("max_body_size", _read_size, 32 * 2**20),
            max_inputs=src.read("max_inputs", lambda n, v: _read_int(n, v, 1), 2048),
            max_request_tokens=src.read(
                "max_request_tokens", lambda n, v: _read_int(n, v, 1), 300_000
            ),
            allow_token_input=src.read("allow_token_input", _read_bool, False),
            shutdown_grace=src.read("shutdown_grace", _read_seconds, 10.0),
        )

    @property
    def address(self) -> str:
        """`host:port` as a URL writes it (IPv6 in brackets)."""
        return join_host_port(self.host, self.port)

    @property
    def url(self) -> str:
        """The server's base URL, e.g. `http://127.0.0.1:11434`."""
        return f"http://{self.address}"

    def is_loopback(self) -> bool:
        """True when the server listens only on this machine (127.x, ::1, localhost)."""
        return is_loopback_host(self.host)


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


# ---------------------------------------------------------------------------
# Client side


@dataclass(frozen=True)
class ClientConfig:
    """How the command-line client reaches a running server."""

    base_url: str
    api_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientConfig:
        """Server address from `OLLAMA_HOST`, key from `EMBERD_API_KEY` (its first entry).

        A server listening on every interface (0.0.0.0, ::) is reached on loopback.
        """
        env = os.environ if env is None else env
        address = parse_ollama_address(_get(env, "OLLAMA_HOST") or "")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address.host, address.host)
        keys = _read_list("EMBERD_API_KEY", _get(env, "EMBERD_API_KEY") or "")
        return cls(
            base_url=OllamaAddress(address.scheme, host, address.port).url,
            api_key=keys[0] if keys else None,
        )
