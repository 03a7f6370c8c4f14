"""Settings: the one table of settings, and the one place that reads the environment.

Each setting is one field of `Settings`, declared with `setting(...)`: its
default, its environment variable, its flag on `emberd serve`, how its text
is read, and its help. `Settings.from_env` reads the variables through that
table, `emberd serve` builds its flags from it (`server/cli`), and a test
holds the README's "Environment variables" table to it. A flag overrides its
variable. Ollama's variables (`OLLAMA_HOST`, `OLLAMA_MODELS`,
`OLLAMA_KEEP_ALIVE`, ...) keep Ollama's meaning so an existing set-up carries
over; emberd's own use the `EMBERD_` prefix.

Adding a setting is one field here, for example::

    max_body_bytes: int = setting(
        1 << 20, "EMBERD_MAX_BODY_BYTES", "--max-body-bytes", integer(1),
        "largest request body in bytes", metavar="N",
    )

A reader (`integer(minimum)`, `text`, `word_list`, `read_path`, ... or a new
`(name, value, env) -> value` that raises ConfigError naming `name`) checks
both the variable's text and the flag's value. A whole-number default makes
an int flag (argparse rejects a non-number); `choices`, `repeatable` (a flag
given once per item, a comma-separated variable) and `metavar` shape the
flag; `shown` is the default as help and README write it (derived from the
default when left out); `default_from` computes a default from the
environment. Then add the README row (the test prints the expected variable,
flag and default cells) and use `settings.<name>` where it matters; nothing
else repeats the default.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, cast

from emberd.backends.cpu_cores import performance_cores
from emberd.server.address import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    clean_value,
    client_url,
    is_loopback_host,
    join_host_port,
    normalise_ip,
    parse_ollama_address,
)
from emberd.server.core.durations import DurationError, parse_keep_alive

__all__ = [
    "LOG_LEVELS",
    "ClientConfig",
    "ConfigError",
    "Settings",
    "Source",
    "environment_rows",
    "setting",
    "setting_sources",
]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

_T = TypeVar("_T")
_SOURCE = "emberd.source"  # the key of a field's metadata that holds its Source

Reader = Callable[[str, object, Mapping[str, str]], Any]
"""Reads a setting: (variable or flag to blame, raw value, environment) -> value."""


class ConfigError(ValueError):
    """A setting with a value that cannot be used; the message names its variable."""


# ---------------------------------------------------------------------------
# Readers: each checks a variable's text or a flag's value

_INTEGER = re.compile(r"[+-]?[0-9]+")


def _get(env: Mapping[str, str], name: str) -> str | None:
    """The cleaned value of a variable, None when unset or empty."""
    raw = env.get(name)
    if raw is None:
        return None
    return clean_value(raw) or None


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME") or env.get("USERPROFILE")
    return Path(home) if home else Path.home()


def _to_int(name: str, value: object) -> int:
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    return value


def integer(minimum: int) -> Reader:
    """A reader of whole numbers no smaller than `minimum`."""

    def read(name: str, value: object, env: Mapping[str, str]) -> int:
        number = _to_int(name, value)
        if number < minimum:
            raise ConfigError(f"{name}: must be at least {minimum}, got {number}")
        return number

    return read


def read_max_loaded(name: str, value: object, env: Mapping[str, str]) -> int:
    """Ollama reads 0 as "choose for me"; here that is the setting's default."""
    return integer(0)(name, value, env) or cast(int, Settings.max_loaded_models)


def read_keep_alive(name: str, value: object, env: Mapping[str, str]) -> float:
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


def read_path(name: str, value: object, env: Mapping[str, str]) -> Path:
    """A directory; a leading `~` is the home directory the environment names."""
    if not isinstance(value, (str, Path)) or not str(value):
        raise ConfigError(f"{name}: expected a directory, got {value!r}")
    text = str(value)
    if text == "~" or text.startswith(("~/", "~\\")):
        return _home(env) / text[2:]
    return Path(text)


def word_list(name: str, value: object, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """A comma-separated variable, or a flag given once per item."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
    return tuple(item.strip() for item in items if item.strip())


def text(name: str, value: object, env: Mapping[str, str] | None = None) -> str:
    """Any non-empty text, trimmed."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}: expected a non-empty value, got {value!r}")
    return value.strip()


def read_registry(name: str, value: object, env: Mapping[str, str]) -> str:
    """An http(s) base URL without its trailing slash."""
    url = text(name, value)
    if not re.match(r"https?://[^/\s]+", url):
        raise ConfigError(f"{name}: expected an http:// or https:// URL, got {value!r}")
    return url.rstrip("/")


def read_log_level(name: str, value: object, env: Mapping[str, str]) -> str:
    """One of LOG_LEVELS, any case."""
    level = text(name, value).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name}: expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _log_level_from_debug(env: Mapping[str, str]) -> str:
    """Ollama's OLLAMA_DEBUG: a true boolean or 1 is debug, 2 or more is trace."""
    debug = _get(env, "OLLAMA_DEBUG") or ""
    if debug in ("1", "t", "T", "TRUE", "true", "True"):
        return "debug"
    if _INTEGER.fullmatch(debug) and int(debug) >= 2:
        return "trace"
    return "info"


def read_host(name: str, value: object, env: Mapping[str, str]) -> str:
    """A host name or IP address (IPv6 with or without brackets)."""
    host = text(name, value)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return normalise_ip(host) or host


def read_port(name: str, value: object, env: Mapping[str, str]) -> int:
    """A TCP port number, 0 to 65535."""
    port = integer(0)(name, value, env)
    if port > 65535:
        raise ConfigError(f"{name}: expected a port number from 0 to 65535, got {port}")
    return port


_SIZE = re.compile(r"([0-9]+)\s*([kmg]i?b?|b)?", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
}


def read_size(name: str, value: object, env: Mapping[str, str]) -> int:
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


def read_bool(name: str, value: object, env: Mapping[str, str]) -> bool:
    """true/false, 1/0, yes/no, on/off, any case; a switch flag gives its own value."""
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else ""
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def read_seconds(name: str, value: object, env: Mapping[str, str]) -> float:
    """A finite duration of 0 or more: whole seconds (`10`) or a Go duration (`1m30s`)."""
    seconds = read_keep_alive(name, value, env)
    if seconds < 0 or math.isinf(seconds):
        raise ConfigError(f"{name}: expected a finite duration of 0 or more, got {value!r}")
    return seconds


# ---------------------------------------------------------------------------
# The table's rows


@dataclass(frozen=True)
class Source:
    """Where one setting comes from, how its text is read, and how it is documented."""

    variable: str
    flag: str
    read: Reader
    help: str
    shown: str  # the default as help and README write it
    literal: bool = True  # False where `shown` is words ("all cores"), not a value
    metavar: str | None = None
    flag_type: Callable[[str], object] = str  # argparse's conversion of the flag's text
    choices: tuple[str, ...] | None = None
    repeatable: bool = False  # a flag given once per item
    from_variable: Callable[[str], object] | None = None  # reads the variable instead of `read`
    default_from: Callable[[Mapping[str, str]], object] | None = None
    secret: bool = False  # help never shows the variable's value
    switch: bool = True  # what a switch flag sets: true for `--flag`, false for `--no-flag`

    def value(self, env: Mapping[str, str], flag: object | None, default: object) -> object:
        """The flag's value if given, else the variable's, else the default."""
        if flag is not None:
            return self.read(self.flag, flag, env)
        raw = _get(env, self.variable)
        if raw is not None:
            if self.from_variable is not None:
                return self.from_variable(raw)
            return self.read(self.variable, raw, env)
        return self.default_from(env) if self.default_from else default

    def help_text(self, env: Mapping[str, str] | None = None) -> str:
        """The flag's help: what it sets, then its variable and the default in effect.

        With `env`, a variable set there is the default the flag would
        override, and the help says so (secrets only that they are set).
        """
        more = " (repeatable)" if self.repeatable else ""
        raw = _get(env, self.variable) if env is not None else None
        if raw is None:
            where = f"env {self.variable}, default {self.shown}"
        elif self.secret:
            where = f"default: the value of env {self.variable}"
        elif self.from_variable is not None:
            where = f"default {self._part_of(raw)}, from env {self.variable}={raw}"
        else:
            where = f"default {raw}, from env {self.variable}"
        return f"{self.help}{more} [{where}]".replace("%", "%%")  # argparse formats help with %

    def _part_of(self, raw: str) -> str:
        try:
            return str(self.from_variable(raw)) if self.from_variable else raw
        except ValueError:
            return raw


def setting(
    default: _T,
    variable: str,
    flag: str,
    read: Reader,
    help: str,
    *,
    shown: str | None = None,
    literal: bool = True,
    metavar: str | None = None,
    flag_type: Callable[[str], object] | None = None,
    choices: tuple[str, ...] | None = None,
    repeatable: bool = False,
    from_variable: Callable[[str], object] | None = None,
    default_from: Callable[[Mapping[str, str]], object] | None = None,
    secret: bool = False,
) -> _T:
    """One row of the settings table: a `Settings` field with its Source.

    `flag_type` defaults to `int` for a whole-number default (argparse then
    rejects a flag that is not one) and to `str` otherwise.
    """
    if flag_type is None:
        # A bool default makes a switch (`--flag` sets true, `--no-flag` false); a whole
        # number an int flag.
        flag_type = type(default) if isinstance(default, (bool, int)) else str
    if shown is None:
        empty = isinstance(default, tuple) and not default
        shown, literal = ("none", False) if empty else (str(default), literal)
    source = Source(
        variable, flag, read, help, shown, literal, metavar, flag_type, choices, repeatable,
        from_variable, default_from, secret, switch=not flag.startswith("--no-"),
    )  # fmt: skip
    return cast(_T, field(default=default, metadata={_SOURCE: source}))


def _home_setting(relative: str, variable: str, flag: str, help: str) -> Path:
    """A directory under the home directory by default (`~/relative`)."""
    return setting(
        Path.home() / relative, variable, flag, read_path, help,
        shown=f"~/{relative}", metavar="DIR", default_from=lambda env: _home(env) / relative,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Settings:
    """Everything the server is configured with, one field per setting.

    Build it with `Settings.from_env`; constructing it directly (as tests do)
    uses the defaults below and reads nothing.
    """

    # Both from OLLAMA_HOST with Ollama's rules; each flag replaces its half.
    host: str = setting(
        DEFAULT_HOST, "OLLAMA_HOST", "--host", read_host, "address to listen on",
        from_variable=lambda raw: parse_ollama_address(raw).host,
    )  # fmt: skip
    port: int = setting(
        DEFAULT_PORT, "OLLAMA_HOST", "--port", read_port, "port to listen on",
        from_variable=lambda raw: parse_ollama_address(raw).port,
    )  # fmt: skip
    # _home_setting returns a field spec, as setting does.
    models_dir: Path = _home_setting(  # noqa: RUF009
        ".emberd/models", "EMBERD_MODELS", "--models", "emberd's model store"
    )
    ollama_models_dir: Path = _home_setting(  # noqa: RUF009
        ".ollama/models", "OLLAMA_MODELS", "--ollama-models", "Ollama's store"
    )
    keep_alive: float = setting(
        300.0, "OLLAMA_KEEP_ALIVE", "--keep-alive", read_keep_alive, "idle time before unload",
        shown="5m", metavar="DURATION",
    )  # fmt: skip
    max_loaded_models: int = setting(
        3, "OLLAMA_MAX_LOADED_MODELS", "--max-loaded-models", read_max_loaded, "models at once",
        metavar="N",
    )  # fmt: skip
    max_queue: int = setting(
        512, "OLLAMA_MAX_QUEUE", "--max-queue", integer(1), "pending request limit",
        metavar="N",
    )  # fmt: skip
    context_length: int = setting(
        4096, "OLLAMA_CONTEXT_LENGTH", "--context-length", integer(1), "default num_ctx",
        metavar="N",
    )  # fmt: skip
    num_thread: int = setting(
        performance_cores(), "EMBERD_NUM_THREAD", "--num-thread", integer(1),
        "CPU threads per model", shown="performance cores", literal=False, metavar="N",
        default_from=lambda env: performance_cores(),
    )  # fmt: skip
    origins: tuple[str, ...] = setting(
        (), "OLLAMA_ORIGINS", "--origin", word_list, "extra allowed origin", repeatable=True
    )
    api_keys: tuple[str, ...] = setting(
        (), "EMBERD_API_KEY", "--api-key", word_list, "accepted API key", repeatable=True,
        secret=True,
    )  # fmt: skip
    default_model: str = setting(
        "all-minilm", "EMBERD_DEFAULT_MODEL", "--default-model", text, "default model name",
        metavar="NAME",
    )  # fmt: skip
    registry: str = setting(
        "https://registry.ollama.ai", "EMBERD_REGISTRY", "--registry", read_registry,
        "registry to pull from", metavar="URL",
    )  # fmt: skip
    log_level: str = setting(
        "info", "EMBERD_LOG_LEVEL", "--log-level", read_log_level, "log verbosity",
        choices=LOG_LEVELS, default_from=_log_level_from_debug,
    )  # fmt: skip
    # Request bounds: OpenAI's for its embeddings endpoint (2,048 inputs,
    # 300,000 tokens over a request's inputs), and a body that holds 2,048
    # inputs of a few thousand characters each.
    max_body_size: int = setting(
        32 * 2**20, "EMBERD_MAX_BODY_SIZE", "--max-body-size", read_size,
        "largest request body (413 past it)", shown="32MiB", metavar="SIZE", flag_type=str,
    )  # fmt: skip
    body_timeout: float = setting(
        60.0, "EMBERD_BODY_TIMEOUT", "--body-timeout", read_seconds,
        "time a request body may take to arrive (408 past it)", shown="60s", metavar="DURATION",
    )  # fmt: skip
    max_inputs: int = setting(
        2048, "EMBERD_MAX_INPUTS", "--max-inputs", integer(1), "most inputs in one request",
        metavar="N",
    )  # fmt: skip
    max_request_tokens: int = setting(
        300_000, "EMBERD_MAX_REQUEST_TOKENS", "--max-request-tokens", integer(1),
        "most tokens in one request", metavar="N",
    )  # fmt: skip
    allow_token_input: bool = setting(
        False, "EMBERD_ALLOW_TOKEN_INPUT", "--allow-token-input", read_bool,
        "accept token ids as /v1/embeddings input", shown="off", literal=False,
    )  # fmt: skip
    ui: bool = setting(
        True, "EMBERD_UI", "--no-ui", read_bool,
        "serve the page at /ui/ and the API reference at /docs", shown="on", literal=False,
    )  # fmt: skip
    shutdown_grace: float = setting(
        10.0, "EMBERD_SHUTDOWN_GRACE", "--shutdown-grace", read_seconds,
        "time in-flight requests get on SIGTERM", shown="10s", metavar="DURATION",
    )  # fmt: skip

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read the environment (default `os.environ`) and apply flag overrides.

        Overrides are keyword arguments named like the fields; None means the
        flag was not given. Raises ConfigError, naming the variable or flag,
        for a value that cannot be used.
        """
        env = os.environ if env is None else env
        unknown = set(overrides) - {item.name for item in fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {
            item.name: _source(item).value(env, overrides.get(item.name), item.default)
            for item in fields(cls)
        }
        return cls(**values)

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


def _source(item: Field[Any]) -> Source:
    return cast(Source, item.metadata[_SOURCE])


def setting_sources() -> list[tuple[str, Source]]:
    """(field name, Source) of every setting, in the table's order."""
    return [(item.name, _source(item)) for item in fields(Settings)]


def environment_rows() -> list[tuple[str, str, str]]:
    """The README's Variable, Flag and Default cells, one row per variable."""
    groups: dict[str, list[Source]] = {}
    for _, source in setting_sources():
        groups.setdefault(source.variable, []).append(source)
    rows = []
    for variable, sources in groups.items():
        flags = ", ".join(
            f"`{s.flag}`" + (" (repeatable)" if s.repeatable else "") for s in sources
        )
        # Settings sharing a variable are halves of one value: OLLAMA_HOST's host:port.
        default = ":".join(s.shown for s in sources)
        literal = all(s.literal for s in sources)
        rows.append((f"`{variable}`", flags, f"`{default}`" if literal else default))
    return rows


# ---------------------------------------------------------------------------
# Client side


@dataclass(frozen=True)
class ClientConfig:
    """How the command-line client reaches a running server."""

    base_url: str
    api_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientConfig:
        """Server address from `OLLAMA_HOST`; key from `EMBERD_API_KEY` (its first entry),
        else `OLLAMA_API_KEY`, the variable Ollama's own clients send.

        A server listening on every interface (0.0.0.0, ::) is reached on loopback.
        """
        env = os.environ if env is None else env
        raw_keys = _get(env, "EMBERD_API_KEY") or _get(env, "OLLAMA_API_KEY") or ""
        keys = word_list("EMBERD_API_KEY", raw_keys)
        return cls(
            base_url=client_url(_get(env, "OLLAMA_HOST") or ""),
            api_key=keys[0] if keys else None,
        )
