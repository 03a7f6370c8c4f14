"""The one table from errors to statuses: a GPU's NaN speaks the contract's words."""

from __future__ import annotations

from emberd.backends.base import BackendError, NonFiniteOnGpu
from emberd.server.http.error_responses import ErrorInfo, describe


def test_nan_from_a_gpu_is_the_contracts_500() -> None:
    fault = NonFiniteOnGpu("sha256-ab.gguf computed NaN or Inf on CUDA0 (12 layers)")
    assert describe(fault) == ErrorInfo(500, "embedding contains NaN or Inf values")
    assert isinstance(fault, BackendError)  # a decode's failure like any other


def test_other_backend_errors_keep_their_message() -> None:
    assert describe(BackendError("llama.cpp decode failed with code 1")) == ErrorInfo(
        500, "llama.cpp decode failed with code 1"
    )
