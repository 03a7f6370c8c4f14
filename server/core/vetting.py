"""Before llama.cpp loads a model file: its header checked, its first load tried apart.

The header checks (models/gguf_checks.py) refuse at once the values llama.cpp
is known to abort on; the probe (backends/probe.py) tries a file's first
load in a child process for everything else. Both run when a model is
loaded, never per request.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from emberd.backends.probe import LoadProbe
from emberd.models.gguf_checks import check_loadable
from emberd.models.gguf_meta import read_gguf_info
from emberd.models.store import PROBED_DIR

Vet = Callable[[Path, str], None]


def file_vetter(models_dir: Path) -> Vet:
    """`vet(path, digest)` for the runtime; good verdicts are kept in the emberd store."""
    probe = LoadProbe(models_dir / PROBED_DIR)

    def vet(path: Path, digest: str) -> None:
        check_loadable(read_gguf_info(path))
        probe.vet(path, digest)

    return vet
