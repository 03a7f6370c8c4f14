"""Errors raised by the models package.

Every error derives from :class:`ModelError`, so a caller that only wants to
know "something about this model is wrong" can catch one type.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error about model names, files and stores."""


class InvalidModelName(ModelError):
    """A model name that does not follow the naming rules."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("invalid model name")
        # Why the name was refused, for logs; never part of the message.
        self.detail = detail


class ModelNotFound(ModelError):
    """No store holds a model of this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} not found")
        self.name = name


class ModelExists(ModelError):
    """An import under a name emberd's store already holds, without leave to replace it."""

    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} is already in emberd's store; --force replaces it")
        self.name = name


class ReadOnlyModel(ModelError):
    """A model that only Ollama's store holds: emberd reads it but never changes it."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"model {name!r} is in Ollama's store, which emberd never changes; "
            f"`ollama rm {name}` removes it"
        )
        self.name = name


class InvalidModelFile(ModelError):
    """A GGUF file, manifest or blob that cannot be read or makes no sense.

    `reason` says what is wrong without saying where: store paths belong in
    the server's log, not in answers to remote clients. `str()` has both.
    """

    def __init__(self, reason: str, *, path: object = None) -> None:
        super().__init__(f"{path}: {reason}" if path is not None else reason)
        self.reason = reason
        self.path = path


class CheckpointError(ModelError):
    """A checkpoint that cannot be imported; the message says what is missing or unsupported."""
