"""Backends that run embedding models (llama.cpp)."""
