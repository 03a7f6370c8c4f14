"""Models: names, stores (emberd's own and Ollama's) and GGUF metadata.

This package never imports the server; the server consults it.
"""

from emberd.models.errors import InvalidModelFile, InvalidModelName, ModelError, ModelNotFound
from emberd.models.gguf_meta import GGUFInfo, read_gguf_info
from emberd.models.names import DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG, ModelName
from emberd.models.ollama_layout import ConfigDetails, Layer
from emberd.models.store import ModelRecord, ModelStores

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_NAMESPACE",
    "DEFAULT_TAG",
    "ConfigDetails",
    "GGUFInfo",
    "InvalidModelFile",
    "InvalidModelName",
    "Layer",
    "ModelError",
    "ModelName",
    "ModelNotFound",
    "ModelRecord",
    "ModelStores",
    "read_gguf_info",
]
