"""A new user's first hour, through the real `emberd` command in a child process.

The checkout's `scripts/emberd` from elsewhere and through a link on PATH;
`serve --help` with OLLAMA_HOST set; a port that Ollama or another emberd
holds; where listed models come from; what `rm` and `import` say; an
unreachable registry; embed-file's `--server` and `--out`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emberd.server import __version__
from emberd.server.config import Settings
from tests.support.gguf_files import write_gguf
from tests.support.harness import TINY, LiveServer, Stores, running_server, settings_for
from tests.support.subprocess_server import REPO, free_port
from tests.support.tiny_model import write_ollama_layout, write_tiny_bert

pytestmark = pytest.mark.slow

EMBERD = [sys.executable, "-m", "emberd.server.cli"]


def emberd(
    *args: str, env: dict[str, str], cwd: Path | None = None, command: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `emberd` command (or `command`) with `args`; its exit status and output."""
    return subprocess.run(
        [*(command or EMBERD), *args],
        env={"PATH": os.environ["PATH"], **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- the command on PATH ----------------------------------------------------------


def test_scripts_emberd_runs_from_anywhere_and_through_a_link(tmp_path: Path) -> None:
    script = REPO / "scripts" / "emberd"
    env = {"HOME": str(tmp_path)}
    ran = emberd("--version", env=env, cwd=tmp_path, command=[str(script)])
    assert (ran.returncode, ran.stdout.strip()) == (0, f"emberd {__version__}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "emberd").symlink_to(script)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    linked = subprocess.run(
        ["emberd", "--version"],
        env={"HOME": str(tmp_path), "PATH": path},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (linked.returncode, linked.stdout.strip()) == (0, f"emberd {__version__}")


def test_relative_paths_mean_the_callers_directory(tmp_path: Path, env: dict[str, str]) -> None:
    write_tiny_bert(tmp_path / "mine.gguf")
    script = REPO / "scripts" / "emberd"
    ran = emberd("import", "./mine.gguf", "--name", "mine", env=env, cwd=tmp_path,
                 command=[str(script)])  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("imported mine:latest (bert,")


# -- serve: help and a taken port --------------------------------------------------


def test_serve_help_shows_the_defaults_the_environment_makes(env: dict[str, str]) -> None:
    env = {**env, "OLLAMA_HOST": "127.0.0.1:11435", "EMBERD_API_KEY": "sk-hidden-key"}
    ran = emberd("serve", "--help", env=env)
    text = " ".join(ran.stdout.split())
    assert ran.returncode == 0
    assert "port to listen on [default 11435, from env OLLAMA_HOST=127.0.0.1:11435]" in text
    assert "[env OLLAMA_KEEP_ALIVE, default 5m]" in text
    assert "accepted API key (repeatable) [default: the value of env EMBERD_API_KEY]" in text
    assert "sk-hidden-key" not in ran.stdout


class _FakeOllama(BaseHTTPRequestHandler):
    """Answers GET / as Ollama does (Go's server sends no Server header)."""

    def do_GET(self) -> None:
        body = b"Ollama is running"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def version_string(self) -> str:
        return ""

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() != "server":
            super().send_header(keyword, value)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_ollama() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOllama)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_port_ollama_holds_is_one_line_naming_it_and_the_fix(
    fake_ollama: int, env: dict[str, str]
) -> None:
    env = {**env, "OLLAMA_HOST": f"127.0.0.1:{fake_ollama}", "EMBERD_DEFAULT_MODEL": "none"}
    ran = emberd("serve", env=env)
    assert ran.returncode == 1
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith(
        f"Error: 127.0.0.1:{fake_ollama} is already in use by Ollama "
        "(GET / answers 'Ollama is running'); choose another port with OLLAMA_HOST=127.0.0.1:"
    )
    other = int(lines[0].rsplit("--port ", 1)[1])
    assert other > fake_ollama
    assert "listening" not in ran.stderr


def test_a_port_another_emberd_holds_says_so(stores: Stores, env: dict[str, str]) -> None:
    with running_server(settings_for(stores)) as live:
        port = live.url.rsplit(":", 1)[1]
        ran = emberd("serve", "--port", port, env={**env, "EMBERD_DEFAULT_MODEL": "none"})
    assert ran.returncode == 1
    assert f"127.0.0.1:{port} is already in use by another emberd" in ran.stderr
    assert "listening" not in ran.stderr


def test_serve_says_it_listens_only_once_it_does(tmp_path: Path, env: dict[str, str]) -> None:
    port = free_port()
    env = {**env, "OLLAMA_HOST": f"127.0.0.1:{port}", "EMBERD_DEFAULT_MODEL": "none"}
    with subprocess.Popen(
        [*EMBERD, "serve"],
        env={"PATH": os.environ["PATH"], **env},
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            assert f"listening on http://127.0.0.1:{port}" in line
            # By the time the line is written, the port is taken.
            taken = emberd("serve", env=env)
            assert taken.returncode == 1
            assert f"127.0.0.1:{port} is already in use" in taken.stderr
        finally:
            process.terminate()
            process.wait(30)


# -- models across two stores ------------------------------------------------------


@pytest.fixture
def two_stores(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """emberd's store with an imported model and a dropped NAME/TAG.gguf; Ollama's with one."""
    gguf = write_tiny_bert(tmp_path / "src.gguf")
    assert emberd("import", str(gguf), "--name", "imported", env=env).returncode == 0
    dropped = tmp_path / "emberd" / "dropped" / "v1.gguf"
    dropped.parent.mkdir(parents=True)
    dropped.write_bytes(gguf.read_bytes())
    write_ollama_layout(tmp_path / "ollama", gguf, name="theirs")
    return env


def test_list_says_where_each_model_comes_from(two_stores: dict[str, str]) -> None:
    settings = Settings.from_env({**two_stores, "EMBERD_NUM_THREAD": "1"})
    with running_server(settings) as live:
        tags = {
            m["name"]: m["details"]["store"] for m in live.client.get("/api/tags").json()["models"]
        }
        host = live.url.removeprefix("http://")
        ran = emberd("list", env={**two_stores, "OLLAMA_HOST": host})
    assert tags == {"imported:latest": "emberd", "dropped:v1": "file", "theirs:latest": "ollama"}
    assert ran.returncode == 0
    rows = {line.split()[0]: line for line in ran.stdout.splitlines()[1:]}
    assert ran.stdout.splitlines()[0].split() == ["NAME", "ID", "SIZE", "MODIFIED", "STORE"]
    assert rows["imported:latest"].endswith("emberd")
    assert rows["dropped:v1"].endswith("emberd (GGUF file)")
    assert rows["theirs:latest"].endswith("ollama (read-only)")


def test_rm_of_an_ollama_model_says_ollama_rm_removes_it(two_stores: dict[str, str]) -> None:
    ran = emberd("rm", "theirs", env=two_stores)
    assert ran.returncode == 1
    assert ran.stderr.strip() == (
        "Error: model 'theirs' is in Ollama's store, which emberd never changes; "
        "`ollama rm theirs` removes it"
    )
    assert (Path(two_stores["OLLAMA_MODELS"]) / "manifests").is_dir()


def test_rm_of_a_dropped_file_names_the_file_and_folder(two_stores: dict[str, str]) -> None:
    folder = Path(two_stores["EMBERD_MODELS"]) / "dropped"
    ran = emberd("rm", "dropped:v1", "imported", env=two_stores)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [
        f"deleted 'dropped:v1': the file {folder / 'v1.gguf'} and its folder {folder}",
        "deleted 'imported'",
    ]
    assert not folder.exists()


def test_import_over_a_name_needs_force_and_says_it_replaced(
    tmp_path: Path, two_stores: dict[str, str]
) -> None:
    other = write_tiny_bert(tmp_path / "other.gguf", seed=5)
    refused = emberd("import", str(other), "--name", "imported", env=two_stores)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "Error: model 'imported' is already in emberd's store; --force replaces it"
    )
    forced = emberd("import", str(other), "--name", "imported", "--force", env=two_stores)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith("replaced imported:latest (bert,")
    # Over a dropped file: the manifest takes the name and the file goes.
    dropped = Path(two_stores["EMBERD_MODELS"]) / "dropped" / "v1.gguf"
    over = emberd("import", str(other), "--name", "dropped:v1", "--force", env=two_stores)
    assert over.returncode == 0, over.stderr
    assert not dropped.exists()


def test_import_of_a_gguf_is_vetted_and_leaves_nothing_when_refused(
    tmp_path: Path, env: dict[str, str]
) -> None:
    bad = write_gguf(tmp_path / "bad.gguf", block_count=0)  # llama.cpp would abort on it
    write_tiny_bert(tmp_path / "good.gguf")
    ran = emberd("import", str(bad), "--name", "bad", env=env)
    assert ran.returncode == 1
    assert "bert.block_count is 0, not between 1 and 512" in ran.stderr
    store = Path(env["EMBERD_MODELS"])
    assert not (store / "manifests").exists()
    typed = emberd("import", str(tmp_path / "good.gguf"), "--name", "x", "--type", "q8_0", env=env)
    assert typed.returncode == 1
    assert "--type is for checkpoints" in typed.stderr


def test_an_imported_gguf_embeds(tmp_path: Path, env: dict[str, str]) -> None:
    gguf = write_tiny_bert(tmp_path / "mine.gguf")
    assert emberd("import", str(gguf), "--name", "mine:v2", env=env).returncode == 0
    settings = Settings.from_env({**env, "EMBERD_NUM_THREAD": "1"})
    with running_server(settings) as live:
        answer = live.client.post("/api/embed", json={"model": "mine:v2", "input": "sky"})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["embeddings"][0]) == 32


# -- messages that tell the fix ----------------------------------------------------


def test_pull_from_an_unreachable_registry_says_so_once(env: dict[str, str]) -> None:
    registry = f"http://127.0.0.1:{free_port()}"
    ran = emberd("pull", "nomic-embed-text", "--insecure", env={**env, "EMBERD_REGISTRY": registry})
    assert ran.returncode == 1
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith(f"Error: cannot reach the registry {registry} (")
    assert "EMBERD_REGISTRY" in lines[0]


def test_embed_file_server_takes_what_ollama_host_takes(
    tmp_path: Path, server: LiveServer, env: dict[str, str]
) -> None:
    corpus = tmp_path / "chunks.txt"
    corpus.write_text("why is the sky blue\ngrass\n")
    address = server.url.removeprefix("http://")  # 127.0.0.1:PORT, no scheme
    out = tmp_path / "v.npy"
    ran = emberd("embed-file", str(corpus), "--model", TINY, "--out", str(out),
                 "--server", address, env=env)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert out.stat().st_size > 0


def test_embed_file_refuses_an_output_name_it_would_not_write(
    tmp_path: Path, env: dict[str, str]
) -> None:
    corpus = tmp_path / "chunks.txt"
    corpus.write_text("sky\n")
    ran = emberd("embed-file", str(corpus), "--model", TINY, "--out", str(tmp_path / "v.csv"),
                 env=env)  # fmt: skip
    assert ran.returncode == 1
    assert ran.stderr.strip() == (
        "Error: --out v.csv: embed-file writes Parquet (.parquet) or a .npy matrix; "
        "name the output so, or give --out-format"
    )
    assert not (tmp_path / "v.csv").exists()
