"""Read a SentencePiece model file (`sentencepiece.bpe.model`) without the sentencepiece package.

The file is a protobuf `ModelProto`; the few fields a converter needs are
decoded by hand: the pieces (text, score, type), the trainer's model type
(1 unigram, 2 BPE) and the normaliser's settings (precompiled character
map, dummy prefix, whitespace merging).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from emberd.models.errors import CheckpointError

UNIGRAM = 1


@dataclass(frozen=True)
class Piece:
    """One vocabulary entry; `kind` is SentencePiece's type (1 normal, 2 unknown, ...)."""

    text: str
    score: float
    kind: int


@dataclass(frozen=True)
class SentencePieceModel:
    """What a converter reads from a SentencePiece model file."""

    pieces: tuple[Piece, ...]
    model_type: int
    precompiled_charsmap: bytes
    add_dummy_prefix: bool
    remove_extra_whitespaces: bool


def read_sentencepiece_model(path: Path) -> SentencePieceModel:
    """Decode the model file at `path`; CheckpointError when it is not one."""
    try:
        data = path.read_bytes()
        fields = _fields(data)
        pieces = tuple(_piece(value) for number, value in fields if number == 1)
        trainer = _message(fields, 2)
        normalizer = _message(fields, 3)
    except (OSError, ValueError, IndexError, struct.error, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable SentencePiece model ({exc})") from exc
    return SentencePieceModel(
        pieces=pieces,
        model_type=_int(trainer, 3, UNIGRAM),
        precompiled_charsmap=_bytes(normalizer, 2),
        add_dummy_prefix=bool(_int(normalizer, 3, 1)),
        remove_extra_whitespaces=bool(_int(normalizer, 4, 1)),
    )


Field = tuple[int, "int | bytes"]


def _fields(data: bytes) -> list[Field]:
    """(field number, value) pairs of a protobuf message: varints, 32-bit values and bytes."""
    out: list[Field] = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            out.append((number, value))
        elif wire == 2:
            length, i = _varint(data, i)
            if i + length > len(data):
                raise ValueError("truncated field")
            out.append((number, data[i : i + length]))
            i += length
        elif wire == 5:
            out.append((number, data[i : i + 4]))
            i += 4
        elif wire == 1:
            out.append((number, data[i : i + 8]))
            i += 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _piece(value: int | bytes) -> Piece:
    if not isinstance(value, bytes):
        raise ValueError("a piece is not a message")
    fields = _fields(value)
    raw_score = _bytes(fields, 2)
    return Piece(
        text=_bytes(fields, 1).decode("utf-8"),
        score=struct.unpack("<f", raw_score)[0] if raw_score else 0.0,
        kind=_int(fields, 3, 1),
    )


def _message(fields: list[Field], number: int) -> list[Field]:
    value = _bytes(fields, number)
    return _fields(value) if value else []


def _bytes(fields: list[Field], number: int) -> bytes:
    found = [v for n, v in fields if n == number]
    return found[-1] if found and isinstance(found[-1], bytes) else b""


def _int(fields: list[Field], number: int, default: int) -> int:
    found = [v for n, v in fields if n == number]
    return found[-1] if found and isinstance(found[-1], int) else default
