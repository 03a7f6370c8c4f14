"""The llama.cpp backend's devices and load plan, on whatever build this is.

The same assertions hold on a CPU, Metal or CUDA build: what is expected
follows the devices the build reports, never a fixed "no GPU".
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from emberd.backends.base import LoadOptions
from emberd.backends.devices import Compute, describe_compute
from emberd.backends.llama_cpp import (
    LlamaCppModel,
    compute_devices,
    gpu_device_limit,
    gpu_offload_supported,
)
from emberd.backends.runner import RunnerBackend
from tests.support.tiny_model import write_tiny_bert

OPTIONS = LoadOptions(
    num_ctx=128,
    num_batch=128,
    num_gpu=-1,
    main_gpu=0,
    use_mmap=False,
    use_mlock=False,
    num_thread=2,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT (3 layers, context 128)."""
    return write_tiny_bert(tmp_path_factory.mktemp("devices") / "tiny.gguf", pooling=1, seed=0)


def test_the_devices_are_those_of_this_build() -> None:
    compute = compute_devices()
    assert Compute.from_dict(compute.as_dict()) == compute
    assert gpu_device_limit() == len(compute.gpus)
    if not compute.gpu_backends:
        assert compute == Compute()  # a CPU build: no GPU backend at all
    # A GPU build on a machine without a GPU (or its driver) offloads nothing.
    assert gpu_offload_supported() == bool(compute.gpus)
    for gpu in compute.gpus:
        assert gpu.backend in compute.gpu_backends
        assert 0 <= gpu.free <= gpu.total
        assert gpu.name and gpu.description


def test_num_gpu_0_runs_on_the_cpu_alone(tiny: Path) -> None:
    model = LlamaCppModel(tiny, dataclasses.replace(OPTIONS, num_gpu=0))
    try:
        assert model.plan.gpus == ()
        assert model.plan.op_offload is False
        assert model.facts.gpu_layers == 0
        assert model.facts.decode_budget is None  # the server's CPU budget
        assert model.parallel_decodes() == 2  # CPU lanes
        vectors = model.embed([[*model.facts.prefix, *model.tokenize("sky"), *model.facts.suffix]])
        assert np.isfinite(vectors).all()
    finally:
        model.close()


def test_num_gpu_unset_offloads_every_layer_when_there_is_a_gpu(tiny: Path) -> None:
    model = LlamaCppModel(tiny, OPTIONS)
    try:
        on_gpu = bool(compute_devices().gpus)
        assert model.facts.gpu_layers == (model.facts.n_layers if on_gpu else 0)
        assert model.plan.op_offload is on_gpu
        assert model.parallel_decodes() == (1 if on_gpu else 2)
        assert model.facts.decode_budget == (128 if on_gpu else None)
    finally:
        model.close()


def test_loading_logs_where_the_model_runs(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="emberd.llama")
    LlamaCppModel(tiny, dataclasses.replace(OPTIONS, num_gpu=0)).close()
    assert "tiny.gguf runs on CPU (num_gpu 0)" in caplog.messages


def test_the_server_logs_what_computes_at_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="emberd.runner")
    backend = RunnerBackend()  # what computes comes from a runner, as plain data
    try:
        gpus = backend.gpu_devices()
    finally:
        backend.close()
    line = describe_compute(compute_devices())
    assert line in caplog.messages
    assert line.startswith("compute: ")
    assert gpus == len(compute_devices().gpus)
    compute = compute_devices()
    if not compute.gpu_backends:
        assert line == "compute: CPU (this build has no GPU backend)"
    elif not compute.gpus:  # e.g. a CUDA build where no GPU or driver is found
        built = ", ".join(compute.gpu_backends)
        assert line == f"compute: CPU (this build has {built} but found no GPU)"


def test_metal_keeps_no_thread_awake_for_its_memory() -> None:
    # llama.cpp reads the variable when its Metal device starts: set on macOS alone.
    if sys.platform == "darwin":
        assert "GGML_METAL_NO_RESIDENCY" in os.environ
    else:
        assert os.environ.get("GGML_METAL_NO_RESIDENCY") is None
