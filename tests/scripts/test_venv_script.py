"""scripts/venv.sh says what installing llama-cpp-python will cost before pip starts.

Only a machine without the built wheel compiles it (minutes); the message
must not promise a build that pip's cache spares, nor hide one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIN = "0.3.36"

pytestmark = pytest.mark.slow


def outlook(venv: Path, cache: Path | None = None) -> str:
    """What `llama_cpp_outlook` prints for `venv` with pip's cache at `cache`."""
    env = {**os.environ, "VENV_UNDER_TEST": str(venv)}
    if cache is not None:
        env["PIP_CACHE_DIR"] = str(cache)
    script = 'source scripts/venv.sh; VENV="$VENV_UNDER_TEST"; llama_cpp_outlook'
    done = subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_pin_is_the_one_pyproject_names() -> None:
    assert f'"llama-cpp-python=={PIN}"' in (REPO / "pyproject.toml").read_text()


def test_an_installed_pin_needs_nothing() -> None:
    venv = Path(sys.executable).parent.parent  # this test run's .venv has it
    assert outlook(venv) == f"llama-cpp-python {PIN} is installed already"


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with pip and nothing else."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    return venv


def test_a_cached_wheel_is_no_build(bare_venv: Path, tmp_path: Path) -> None:
    wheels = tmp_path / "cache" / "wheels" / "ab" / "cd"
    wheels.mkdir(parents=True)
    (wheels / f"llama_cpp_python-{PIN}-py3-none-linux_x86_64.whl").write_bytes(b"")
    said = outlook(bare_venv, tmp_path / "cache")
    assert said == (
        f"llama-cpp-python {PIN} comes from pip's cache (a few minutes; pip's output follows)"
    )


def test_without_the_wheel_it_says_it_compiles(bare_venv: Path, tmp_path: Path) -> None:
    (tmp_path / "empty-cache").mkdir()
    said = outlook(bare_venv, tmp_path / "empty-cache")
    assert said == (
        f"llama-cpp-python {PIN} compiles from source (5-10 minutes; pip's output follows)"
    )
