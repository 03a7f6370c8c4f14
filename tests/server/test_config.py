"""Settings from the environment and flags, and Ollama's OLLAMA_HOST rules."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from emberd.backends.cpu_cores import performance_cores
from emberd.server.address import parse_ollama_address, parse_ollama_host
from emberd.server.config import ClientConfig, ConfigError, Settings, environment_rows

HOME = {"HOME": "/home/u"}


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("", "127.0.0.1", 11434),
        ("1.2.3.4", "1.2.3.4", 11434),
        (":1234", "127.0.0.1", 1234),
        ("1.2.3.4:1234", "1.2.3.4", 1234),
        ("example.com", "example.com", 11434),
        ("example.com:1234", "example.com", 1234),
        ("0.0.0.0", "0.0.0.0", 11434),
        ("0.0.0.0:8080", "0.0.0.0", 8080),
        (":0", "127.0.0.1", 0),
        (":66000", "127.0.0.1", 11434),
        (":-1", "127.0.0.1", 11434),
        ("1.2.3.4:", "1.2.3.4", 11434),
        ("example.com:abc", "example.com", 11434),
        ("example.com:+80", "example.com", 80),
        ("[::1]", "::1", 11434),
        ("[::]", "::", 11434),
        ("::1", "::1", 11434),
        ("[::1]:1337", "::1", 1337),
        ("[0:0:0:0:0:0:0:1]:1337", "::1", 1337),
        ("::ffff:127.0.0.1", "127.0.0.1", 11434),
        (" 1.2.3.4 ", "1.2.3.4", 11434),
        ('"1.2.3.4"', "1.2.3.4", 11434),
        (' " 1.2.3.4 " ', "1.2.3.4", 11434),
        ("'1.2.3.4'", "1.2.3.4", 11434),
        ("http://1.2.3.4", "1.2.3.4", 80),
        ("http://1.2.3.4:4321", "1.2.3.4", 4321),
        ("https://1.2.3.4", "1.2.3.4", 443),
        ("https://1.2.3.4:4321", "1.2.3.4", 4321),
        ("https://example.com/ollama", "example.com", 443),
        ("http://example.com:99999/", "example.com", 80),
        ("http://[::1]:5000/path", "::1", 5000),
    ],
)
def test_ollama_host(value: str, host: str, port: int) -> None:
    assert parse_ollama_host(value) == (host, port)


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("", "http://127.0.0.1:11434"),
        ("https://example.com/ollama", "https://example.com:443"),
        ("::1", "http://[::1]:11434"),
        ("example.com:1234", "http://example.com:1234"),
    ],
)
def test_ollama_address_keeps_scheme(value: str, url: str) -> None:
    assert parse_ollama_address(value).url == url


def test_defaults() -> None:
    settings = Settings.from_env(HOME)
    assert settings.host == "127.0.0.1"
    assert settings.port == 11434
    assert settings.models_dir == Path("/home/u/.emberd/models")
    assert settings.ollama_models_dir == Path("/home/u/.ollama/models")
    assert settings.keep_alive == 300.0
    assert settings.max_loaded_models == 3
    assert settings.max_queue == 512
    assert settings.context_length == 4096
    assert settings.num_thread == performance_cores()
    assert settings.origins == ()
    assert settings.api_keys == ()
    assert settings.default_model == "all-minilm"
    assert settings.registry == "https://registry.ollama.ai"
    assert settings.log_level == "info"
    assert settings.url == "http://127.0.0.1:11434"
    assert settings.is_loopback()


def test_every_variable() -> None:
    env = {
        **HOME,
        "OLLAMA_HOST": "0.0.0.0:9999",
        "EMBERD_MODELS": "/srv/emberd",
        "OLLAMA_MODELS": "~/ollama-store",
        "OLLAMA_KEEP_ALIVE": "1h30m",
        "OLLAMA_MAX_LOADED_MODELS": "5",
        "OLLAMA_MAX_QUEUE": "7",
        "OLLAMA_CONTEXT_LENGTH": "512",
        "EMBERD_NUM_THREAD": "2",
        "OLLAMA_ORIGINS": "http://a.example, https://b.example,,",
        "EMBERD_API_KEY": "k1,k2",
        "EMBERD_DEFAULT_MODEL": "nomic-embed-text",
        "EMBERD_REGISTRY": "http://localhost:5000/",
        "EMBERD_LOG_LEVEL": "WARNING",
    }
    settings = Settings.from_env(env)
    assert (settings.host, settings.port) == ("0.0.0.0", 9999)
    assert settings.models_dir == Path("/srv/emberd")
    assert settings.ollama_models_dir == Path("/home/u/ollama-store")
    assert settings.keep_alive == 5400.0
    assert settings.max_loaded_models == 5
    assert settings.max_queue == 7
    assert settings.context_length == 512
    assert settings.num_thread == 2
    assert settings.origins == ("http://a.example", "https://b.example")
    assert settings.api_keys == ("k1", "k2")
    assert settings.default_model == "nomic-embed-text"
    assert settings.registry == "http://localhost:5000"
    assert settings.log_level == "warning"
    assert not settings.is_loopback()


def test_flags_override_variables() -> None:
    env = {**HOME, "OLLAMA_HOST": "1.2.3.4:1234", "OLLAMA_KEEP_ALIVE": "10m", "EMBERD_API_KEY": "a"}
    settings = Settings.from_env(
        env,
        host="::1",
        port=None,
        models_dir="~/m",
        keep_alive="30s",
        api_keys=["x", "y"],
        max_queue=3,
        log_level="debug",
    )
    assert settings.host == "::1"
    assert settings.port == 1234  # the variable still supplies what the flags leave out
    assert settings.url == "http://[::1]:1234"
    assert settings.models_dir == Path("/home/u/m")
    assert settings.keep_alive == 30.0
    assert settings.api_keys == ("x", "y")
    assert settings.max_queue == 3
    assert settings.log_level == "debug"


def test_port_flag_alone() -> None:
    settings = Settings.from_env({**HOME, "OLLAMA_HOST": "0.0.0.0"}, port=8080)
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("0", 0.0),
        ("-1", math.inf),
        ("-1m", math.inf),
        ("5m0s", 300.0),
        ("1h2m3s", 3723.0),
        ('"10m"', 600.0),
        (" ", 300.0),  # blank is unset
    ],
)
def test_keep_alive_variable(text: str, seconds: float) -> None:
    assert Settings.from_env({**HOME, "OLLAMA_KEEP_ALIVE": text}).keep_alive == seconds


def test_keep_alive_flag_takes_numbers_and_strings() -> None:
    assert Settings.from_env(HOME, keep_alive="45").keep_alive == 45.0
    assert Settings.from_env(HOME, keep_alive=2.5).keep_alive == 2.5
    assert Settings.from_env(HOME, keep_alive="-5s").keep_alive == math.inf


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OLLAMA_KEEP_ALIVE": "1d"}, 'OLLAMA_KEEP_ALIVE: time: unknown unit "d" in duration "1d"'),
        ({"OLLAMA_KEEP_ALIVE": "1.5"}, "OLLAMA_KEEP_ALIVE: time: missing unit"),
        ({"OLLAMA_MAX_LOADED_MODELS": "many"}, "OLLAMA_MAX_LOADED_MODELS: expected an integer"),
        ({"OLLAMA_MAX_LOADED_MODELS": "-1"}, "OLLAMA_MAX_LOADED_MODELS: must be at least 0"),
        ({"OLLAMA_MAX_QUEUE": "0"}, "OLLAMA_MAX_QUEUE: must be at least 1"),
        ({"OLLAMA_MAX_QUEUE": "1e3"}, "OLLAMA_MAX_QUEUE: expected an integer"),
        ({"OLLAMA_CONTEXT_LENGTH": "0x10"}, "OLLAMA_CONTEXT_LENGTH: expected an integer"),
        ({"EMBERD_NUM_THREAD": "0"}, "EMBERD_NUM_THREAD: must be at least 1"),
        ({"EMBERD_REGISTRY": "registry.ollama.ai"}, "EMBERD_REGISTRY: expected an http"),
        ({"EMBERD_LOG_LEVEL": "loud"}, "EMBERD_LOG_LEVEL: expected one of"),
    ],
)
def test_bad_variables(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**HOME, **env})
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 70000}, "--port: expected a port number"),
        ({"port": -1}, "--port: must be at least 0"),
        ({"host": "  "}, "--host: expected a non-empty value"),
        ({"keep_alive": [5]}, "--keep-alive: invalid keep_alive: expected a number"),
        ({"keep_alive": True}, "--keep-alive: invalid keep_alive: expected a number"),
        ({"keep_alive": "soon"}, '--keep-alive: time: invalid duration "soon"'),
        ({"max_queue": 0}, "--max-queue: must be at least 1"),
        ({"log_level": "loud"}, "--log-level: expected one of"),
    ],
)
def test_bad_flags(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(HOME, **overrides)
    assert str(caught.value).startswith(message)


def test_unitless_keep_alive_flag_is_seconds() -> None:
    # "5" is an integer string, which the variable and the flag both read as seconds.
    assert Settings.from_env(HOME, keep_alive="5").keep_alive == 5.0


def test_unknown_override_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="colour"):
        Settings.from_env(HOME, colour="red")


def test_zero_max_loaded_models_means_default() -> None:
    assert Settings.from_env({**HOME, "OLLAMA_MAX_LOADED_MODELS": "0"}).max_loaded_models == 3


@pytest.mark.parametrize(
    ("debug", "level"),
    [("1", "debug"), ("true", "debug"), ("2", "trace"), ("0", "info"), ("false", "info")],
)
def test_ollama_debug(debug: str, level: str) -> None:
    assert Settings.from_env({**HOME, "OLLAMA_DEBUG": debug}).log_level == level


def test_emberd_log_level_beats_ollama_debug() -> None:
    env = {**HOME, "OLLAMA_DEBUG": "1", "EMBERD_LOG_LEVEL": "error"}
    assert Settings.from_env(env).log_level == "error"


def test_empty_variables_are_unset() -> None:
    env = {**HOME, "OLLAMA_HOST": "", "EMBERD_MODELS": "", "OLLAMA_MAX_QUEUE": "''"}
    settings = Settings.from_env(env)
    assert (settings.host, settings.port) == ("127.0.0.1", 11434)
    assert settings.models_dir == Path("/home/u/.emberd/models")
    assert settings.max_queue == 512


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "9")
    assert Settings.from_env().max_queue == 9


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert Settings(host=host).is_loopback() is loopback


@pytest.mark.parametrize(
    ("env", "url", "key"),
    [
        ({}, "http://127.0.0.1:11434", None),
        ({"OLLAMA_HOST": "0.0.0.0:8080"}, "http://127.0.0.1:8080", None),
        ({"OLLAMA_HOST": "[::]:8080"}, "http://[::1]:8080", None),
        ({"OLLAMA_HOST": "https://example.com"}, "https://example.com:443", None),
        ({"EMBERD_API_KEY": "first, second"}, "http://127.0.0.1:11434", "first"),
    ],
)
def test_client_config(env: dict[str, str], url: str, key: str | None) -> None:
    config = ClientConfig.from_env(env)
    assert config.base_url == url
    assert config.api_key == key


def _readme_environment_rows() -> list[tuple[str, str, str]]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    cells = [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]
    return [(c[0], c[1], c[2]) for c in cells]


def test_readme_environment_table_matches_the_settings() -> None:
    expected = environment_rows()
    assert ("`OLLAMA_HOST`", "`--host`, `--port`", "`127.0.0.1:11434`") in expected
    wanted = "\n".join(f"| {v} | {f} | {d} |" for v, f, d in expected)
    assert _readme_environment_rows() == expected, f"README rows should start:\n{wanted}"
