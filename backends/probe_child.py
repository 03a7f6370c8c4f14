"""The child side of a load probe: `python -m backends.probe_child FILE`.

Loads FILE with llama.cpp on the CPU, embeds one short text, and exits 0
when the vector is finite. A failure llama.cpp reports is printed as one line
on stdout and exits 1; a crash ends the process by a signal, which the parent
reads from the exit status.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from emberd.backends.base import BackendError, LoadOptions

_TEXT = "The probe: a short text."
# Small and cheap: the probe asks whether the file loads and runs, not how fast.
_CONTEXT = 64


def main(argv: list[str]) -> int:
    """Probe the file named in `argv`; the exit status is the verdict."""
    from emberd.backends.llama_cpp import LlamaCppBackend

    if len(argv) != 1:
        print("usage: python -m backends.probe_child FILE")
        return 2
    options = LoadOptions(
        num_ctx=_CONTEXT,
        num_batch=_CONTEXT,
        num_gpu=0,
        main_gpu=0,
        use_mmap=True,
        use_mlock=False,
        num_thread=1,
    )
    try:
        model = LlamaCppBackend().load(Path(argv[0]), options)
        try:
            facts = model.facts
            limit = max(1, min(_CONTEXT, facts.n_ctx_train) - len(facts.prefix) - len(facts.suffix))
            tokens = [*facts.prefix, *model.tokenize(_TEXT)[:limit], *facts.suffix]
            vectors = model.embed([tokens])
        finally:
            model.close()
    except BackendError as exc:
        print(str(exc))
        return 1
    if not np.isfinite(vectors).all():
        print("this model computes NaN or Inf values")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
