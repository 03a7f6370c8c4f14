"""The emberd benchmark: emberd against llama-server, Llama.embed and sentence-transformers.

`python -m scripts.bench_lib` (or `scripts/bench`) runs it. The modules
`texts`, `workloads` and `results` use only the standard library, so the
in-process worker can import them from another interpreter.
"""
