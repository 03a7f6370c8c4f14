"""Fixtures of the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose stores are folders under tmp_path (empty until written)."""
    return {
        "HOME": str(tmp_path),
        "EMBERD_MODELS": str(tmp_path / "emberd"),
        "OLLAMA_MODELS": str(tmp_path / "ollama"),
    }
