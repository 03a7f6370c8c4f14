"""Model names: `[host/][namespace/]model[:tag]`, as Ollama spells them.

A name is checked part by part before any of it is used to build a path:
host may carry a port, the other parts are letters, digits, `_`, `-` and `.`
starting with a letter or a digit. That alone rules out `..`, absolute
paths, backslashes and empty parts. Each part becomes a folder or file name,
so names Windows cannot create are refused on every system (a store may be
shared, and a name must mean the same everywhere): the reserved device
names (`con`, `nul`, `com1`..., with any extension) and a trailing dot. A
host's `:port` cannot be a folder name on Windows, which refuses it there.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass

from emberd.models.errors import InvalidModelName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(:[0-9]{1,5})?")
_MAX_HOST = 350
_MAX_PART = 128  # namespace, model and tag
# Windows' reserved device names: "con" or "con.txt" opens the console, not a file.
_RESERVED = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"{device}{n}" for device in ("com", "lpt") for n in range(10)]
)


def is_valid_part(text: str) -> bool:
    """True when `text` may be a namespace, model or tag."""
    return len(text) <= _MAX_PART and _PART.fullmatch(text) is not None and _windows_file_name(text)


def is_valid_host(text: str) -> bool:
    """True when `text` may be a host, with an optional `:port` (not on Windows)."""
    if len(text) > _MAX_HOST or _HOST.fullmatch(text) is None:
        return False
    return _windows_file_name(text) and not (sys.platform == "win32" and ":" in text)


def _windows_file_name(text: str) -> bool:
    """Whether Windows can create a file of this name (checked parts only hold [A-Za-z0-9_.-])."""
    return not text.endswith(".") and text.split(".")[0].lower() not in _RESERVED


@dataclass(frozen=True)
class ModelName:
    """A fully qualified model name; parts keep the case they were given in."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """Parse `text`, filling defaults; raise InvalidModelName when malformed."""
        if not isinstance(text, str) or not text:
            raise InvalidModelName("empty name")
        return _parse(text)

    def check(self) -> None:
        """Raise InvalidModelName unless every part follows the rules."""
        if not is_valid_host(self.host):
            raise InvalidModelName(f"bad host {self.host!r}")
        for part in (self.namespace, self.model, self.tag):
            if not is_valid_part(part):
                raise InvalidModelName(f"bad name part {part!r}")

    @property
    def display(self) -> str:
        """The short form Ollama shows: defaults left out where they can be."""
        short = f"{self.model}:{self.tag}"
        if _same(self.host, DEFAULT_HOST):
            if _same(self.namespace, DEFAULT_NAMESPACE):
                return short
            return f"{self.namespace}/{short}"
        return f"{self.host}/{self.namespace}/{short}"

    @property
    def key(self) -> str:
        """The identity used for matching: every part, lower-cased."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}".lower()

    def __str__(self) -> str:
        return self.display


def _same(a: str, b: str) -> bool:
    return a.lower() == b.lower()


# Every request parses its model's name, nearly always one of a few: each is
# parsed once. A malformed name raises, and is not kept.
@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> ModelName:
    *parts, last = text.split("/")
    if len(parts) > 2:
        raise InvalidModelName(f"too many parts in {text!r}")
    model, colon, tag = last.partition(":")
    if not colon:
        tag = DEFAULT_TAG
    host = parts[0] if len(parts) == 2 else DEFAULT_HOST
    namespace = parts[-1] if parts else DEFAULT_NAMESPACE
    name = ModelName(host=host, namespace=namespace, model=model, tag=tag)
    name.check()
    return name
