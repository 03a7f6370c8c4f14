"""The `emberd` command: serve flags, and the client verbs against a stand-in server."""

from __future__ import annotations

import json
import math
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emberd.models.terminal import human_bytes
from emberd.server import __version__
from emberd.server.cli.main import build_parser, build_settings, human_number, human_time, main
from emberd.server.config import setting_sources

HOME = {"HOME": "/home/u"}
NOW = datetime.now(timezone.utc)  # for pure formatting; answers that are read against
# the clock take theirs when the test runs (the suite may be long past import)


def _stamp(moment: datetime) -> str:
    # Go writes nanoseconds and a Z; the client must read that form.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.123456789Z")


# ---------------------------------------------------------------------------
# serve


def test_serve_flags_make_settings() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--host", "0.0.0.0",
            "--port", "8080",
            "--models", "/srv/models",
            "--ollama-models", "/srv/ollama",
            "--keep-alive", "10m",
            "--api-key", "a",
            "--api-key", "b",
            "--origin", "http://app.example",
            "--max-loaded-models", "2",
            "--max-queue", "16",
            "--context-length", "512",
            "--num-thread", "3",
            "--default-model", "nomic-embed-text",
            "--registry", "http://localhost:5000",
            "--log-level", "debug",
        ]
    )  # fmt: skip
    settings = build_settings(args, {**HOME, "OLLAMA_HOST": "1.2.3.4:1", "EMBERD_API_KEY": "z"})
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.models_dir == Path("/srv/models")
    assert settings.ollama_models_dir == Path("/srv/ollama")
    assert settings.keep_alive == 600.0
    assert settings.api_keys == ("a", "b")
    assert settings.origins == ("http://app.example",)
    assert settings.max_loaded_models == 2
    assert settings.max_queue == 16
    assert settings.context_length == 512
    assert settings.num_thread == 3
    assert settings.default_model == "nomic-embed-text"
    assert settings.registry == "http://localhost:5000"
    assert settings.log_level == "debug"


def test_serve_without_flags_reads_the_environment() -> None:
    args = build_parser().parse_args(["serve"])
    env = {**HOME, "OLLAMA_HOST": "[::1]:1234", "OLLAMA_KEEP_ALIVE": "-1", "EMBERD_API_KEY": "k"}
    settings = build_settings(args, env)
    assert (settings.host, settings.port) == ("::1", 1234)
    assert settings.keep_alive == math.inf
    assert settings.api_keys == ("k",)


def test_serve_with_a_bad_setting_fails_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--keep-alive", "5x"], env=HOME) == 2
    assert capsys.readouterr().err.strip() == (
        'Error: --keep-alive: time: unknown unit "x" in duration "5x"'
    )


def test_serve_rejects_a_non_numeric_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "http"], env=HOME) == 2
    assert "invalid int value" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [s.flag for _, s in setting_sources() if s.flag_type is int])
def test_serve_rejects_non_numeric_int_flags(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", flag, "many"], env=HOME) == 2
    assert "invalid int value" in capsys.readouterr().err


def test_serve_help_names_each_variable_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"], env=HOME) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for _, source in setting_sources():
        assert source.flag in text
        assert f"[env {source.variable}, default {source.shown}]" in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"], env=HOME) == 0
    assert capsys.readouterr().out.strip() == f"emberd {__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], env=HOME) == 2
    out = capsys.readouterr().out
    for verb in ("serve", "list", "ps", "show", "embed"):
        assert verb in out


# ---------------------------------------------------------------------------
# Formatting helpers


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 KB"),
        (1500, "1.5 KB"),
        (45_960_996, "45 MB"),
        (274_302_450, "274 MB"),
        (1_200_000_000, "1.2 GB"),
        (3_000_000_000_000, "3 TB"),
    ],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [(512, "512"), (22_565_760, "22.57M"), (137_000_000, "137M"), (7_241_732_096, "7.2B")],
)
def test_human_number(count: int, text: str) -> None:
    assert human_number(count) == text


@pytest.mark.parametrize(
    ("offset", "text"),
    [
        (timedelta(seconds=-0.5), "Less than a second ago"),
        (timedelta(seconds=-1), "1 second ago"),
        (timedelta(seconds=-30), "30 seconds ago"),
        (timedelta(seconds=-90), "About a minute ago"),
        (timedelta(minutes=-10), "10 minutes ago"),
        (timedelta(minutes=-65), "About an hour ago"),
        (timedelta(hours=-5), "5 hours ago"),
        (timedelta(days=-2, hours=-1), "2 days ago"),
        (timedelta(days=-21), "3 weeks ago"),
        (timedelta(days=-90), "3 months ago"),
        (timedelta(days=-1000), "2 years ago"),
        (timedelta(minutes=4, seconds=30), "4 minutes from now"),
        (timedelta(days=365 * 300), "Forever"),
    ],
)
def test_human_time(offset: timedelta, text: str) -> None:
    assert human_time(NOW + offset, NOW) == text


def test_human_time_of_nothing() -> None:
    assert human_time(None, NOW) == "Never"


# ---------------------------------------------------------------------------
# Client verbs against a stand-in server


@dataclass
class Recorded:
    method: str
    path: str
    body: object
    authorization: str | None


@dataclass
class StandIn:
    """A tiny HTTP server with canned answers, recording what it is asked."""

    env: dict[str, str]
    answers: dict[tuple[str, str], tuple[int, object]]
    requests: list[Recorded] = field(default_factory=list)


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    state = StandIn(env={}, answers={})

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            state.requests.append(
                Recorded(
                    self.command,
                    self.path,
                    json.loads(raw) if raw else None,
                    self.headers.get("Authorization"),
                )
            )
            status, body = state.answers.get((self.command, self.path), (404, {"error": "no"}))
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _answer
        do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.env = {"OLLAMA_HOST": f"127.0.0.1:{server.server_address[1]}"}
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_list(stand_in: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    stand_in.answers[("GET", "/api/tags")] = (
        200,
        {
            "models": [
                {
                    "name": "all-minilm:latest",
                    "model": "all-minilm:latest",
                    "modified_at": _stamp(NOW - timedelta(days=2, hours=1)),
                    "size": 45_960_996,
                    "digest": "1b226e2802dbd2c1a5b0a3a2c5e5f0b3d4a1e6c7b8f9a0d1e2f3a4b5c6d7e8f9",
                    "details": {"format": "gguf", "family": "bert", "store": "file"},
                },
                {
                    "name": "nomic-embed-text:latest",
                    "model": "nomic-embed-text:latest",
                    "modified_at": _stamp(NOW - timedelta(hours=3, minutes=5)),
                    "size": 274_302_450,
                    "digest": "0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f",
                    "details": {"format": "gguf", "family": "nomic-bert", "store": "ollama"},
                },
            ]
        },
    )
    assert main(["list"], env=stand_in.env) == 0
    assert capsys.readouterr().out == (
        "NAME                       ID              SIZE      MODIFIED       STORE\n"
        "all-minilm:latest          1b226e2802db    45 MB     2 days ago     emberd (GGUF file)\n"
        "nomic-embed-text:latest    0a109f422b47    274 MB    3 hours ago    ollama (read-only)\n"
    )
    assert [(r.method, r.path) for r in stand_in.requests] == [("GET", "/api/tags")]


def test_list_of_nothing_prints_the_header(
    stand_in: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in.answers[("GET", "/api/tags")] = (200, {"models": []})
    assert main(["ls"], env=stand_in.env) == 0
    assert capsys.readouterr().out == "NAME    ID    SIZE    MODIFIED    STORE\n"


def test_ps(stand_in: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(timezone.utc)
    stand_in.answers[("GET", "/api/ps")] = (
        200,
        {
            "models": [
                {
                    "name": "nomic-embed-text:latest",
                    "model": "nomic-embed-text:latest",
                    "size": 300_000_000,
                    "size_vram": 300_000_000,
                    "digest": "0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f",
                    "expires_at": "2318-01-01T00:00:00Z",
                    "context_length": 2048,
                },
                {
                    "name": "all-minilm:latest",
                    "model": "all-minilm:latest",
                    "size": 50_000_000,
                    "size_vram": 0,
                    "digest": "1b226e2802dbd2c1a5b0a3a2c5e5f0b3d4a1e6c7b8f9a0d1e2f3a4b5c6d7e8f9",
                    "expires_at": _stamp(now + timedelta(minutes=4, seconds=30)),
                    "context_length": 256,
                },
                {
                    "name": "split:latest",
                    "model": "split:latest",
                    "size": 100_000_000,
                    "size_vram": 25_000_000,
                    "digest": "sha256:ffffffffffffffffffff",
                    "expires_at": _stamp(now - timedelta(seconds=5)),
                    "context_length": 512,
                },
            ]
        },
    )
    assert main(["ps"], env=stand_in.env) == 0
    assert capsys.readouterr().out == (
        "NAME                       ID              SIZE      PROCESSOR          CONTEXT    "
        "UNTIL\n"
        "nomic-embed-text:latest    0a109f422b47    300 MB    100% GPU           2048       "
        "Forever\n"
        "all-minilm:latest          1b226e2802db    50 MB     100% CPU           256        "
        "4 minutes from now\n"
        "split:latest               ffffffffffff    100 MB    75%/25% CPU/GPU    512        "
        "Stopping...\n"
    )


def test_show(stand_in: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    stand_in.answers[("POST", "/api/show")] = (
        200,
        {
            "details": {"format": "gguf", "family": "bert", "parameter_size": "23M",
                        "quantization_level": "F16"},
            "model_info": {
                "general.architecture": "bert",
                "general.parameter_count": 22_565_760,
                "bert.context_length": 512,
                "bert.embedding_length": 384,
                "bert.pooling_type": 1,
            },
            "capabilities": ["embedding"],
            "parameters": 'num_ctx                        256\nstop                           "x"',
            "modified_at": _stamp(NOW),
        },
    )  # fmt: skip
    assert main(["show", "all-minilm"], env=stand_in.env) == 0
    assert capsys.readouterr().out == (
        "  Model\n"
        "    architecture        bert\n"
        "    parameters          22.57M\n"
        "    context length      512\n"
        "    embedding length    384\n"
        "    quantization        F16\n"
        "\n"
        "  Capabilities\n"
        "    embedding\n"
        "\n"
        "  Parameters\n"
        "    num_ctx    256\n"
        '    stop       "x"\n'
        "\n"
    )
    assert stand_in.requests[0].body == {"model": "all-minilm"}


def test_embed_prints_the_response(stand_in: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    body = b'{"model":"all-minilm","embeddings":[[0.1,-0.2],[0.3,0.4]],"prompt_eval_count":7}'
    stand_in.answers[("POST", "/api/embed")] = (200, body)
    assert main(["embed", "all-minilm", "Why is the sky blue?", "grass"], env=stand_in.env) == 0
    assert capsys.readouterr().out == body.decode() + "\n"
    request = stand_in.requests[0]
    assert request.body == {"model": "all-minilm", "input": ["Why is the sky blue?", "grass"]}
    assert request.authorization is None


def test_api_key_is_sent(stand_in: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    stand_in.answers[("GET", "/api/tags")] = (200, {"models": []})
    env = {**stand_in.env, "EMBERD_API_KEY": "secret"}
    assert main(["list"], env=env) == 0
    assert stand_in.requests[0].authorization == "Bearer secret"


def test_ollama_api_key_is_sent_when_emberd_api_key_is_unset(
    stand_in: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in.answers[("GET", "/api/tags")] = (200, {"models": []})
    assert main(["list"], env={**stand_in.env, "OLLAMA_API_KEY": "from-ollama"}) == 0
    both = {**stand_in.env, "OLLAMA_API_KEY": "from-ollama", "EMBERD_API_KEY": "mine,other"}
    assert main(["list"], env=both) == 0
    assert [r.authorization for r in stand_in.requests] == ["Bearer from-ollama", "Bearer mine"]


def test_error_response_prints_the_server_message(
    stand_in: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in.answers[("POST", "/api/show")] = (
        404,
        {"error": 'model "nope" not found, try pulling it first'},
    )
    assert main(["show", "nope"], env=stand_in.env) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == 'Error: model "nope" not found, try pulling it first'
    assert captured.out == ""


def test_openai_shaped_error_is_read_too(
    stand_in: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in.answers[("POST", "/api/embed")] = (
        401,
        {"error": {"message": "invalid api key", "type": "invalid_request_error"}},
    )
    assert main(["embed", "m", "x"], env=stand_in.env) == 1
    assert capsys.readouterr().err.strip() == (
        "Error: invalid api key; this command sends the first key of EMBERD_API_KEY, "
        "else OLLAMA_API_KEY"
    )


def test_error_without_json_body(stand_in: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    stand_in.answers[("GET", "/api/ps")] = (502, b"<html>bad gateway</html>")
    assert main(["ps"], env=stand_in.env) == 1
    assert capsys.readouterr().err.strip() == "Error: 502 Bad Gateway"


def test_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["list"], env={"OLLAMA_HOST": f"127.0.0.1:{port}"}) == 1
    assert capsys.readouterr().err.strip() == (
        f"Error: could not connect to emberd at http://127.0.0.1:{port}; is `emberd serve` running?"
    )


def test_client_reaches_a_wildcard_host_on_loopback(
    stand_in: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in.answers[("GET", "/api/tags")] = (200, {"models": []})
    port = stand_in.env["OLLAMA_HOST"].rsplit(":", 1)[1]
    assert main(["list"], env={"OLLAMA_HOST": f"0.0.0.0:{port}"}) == 0
    assert len(stand_in.requests) == 1


@pytest.mark.parametrize(
    ("argv", "env", "ui"),
    [
        (["serve"], {}, True),
        (["serve", "--no-ui"], {}, False),
        (["serve"], {"EMBERD_UI": "0"}, False),
        (["serve", "--no-ui"], {"EMBERD_UI": "1"}, False),  # the flag beats the variable
        (["serve"], {"EMBERD_UI": "off"}, False),
    ],
)
def test_no_ui_flag_and_variable(argv: list[str], env: dict[str, str], ui: bool) -> None:
    settings = build_settings(build_parser().parse_args(argv), {**HOME, **env})
    assert settings.ui is ui


def test_allow_token_input_switch_still_sets_true() -> None:
    args = build_parser().parse_args(["serve", "--allow-token-input"])
    assert build_settings(args, HOME).allow_token_input is True
