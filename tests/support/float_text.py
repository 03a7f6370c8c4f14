"""Checks that numbers in a JSON answer are the shortest text of their float32."""

from __future__ import annotations

import re
from decimal import Decimal

import numpy as np

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def significant_digits(text: str) -> int:
    mantissa = text.lstrip("-").split("e")[0].split("E")[0].replace(".", "")
    return len(mantissa.lstrip("0")) or 1


def assert_shortest_float32_text(numbers: list[str]) -> None:
    """Each number is the shortest decimal text of the float32 it denotes."""
    for text in numbers:
        assert significant_digits(text) <= 9, text
        value = np.float32(text)
        shortest = np.format_float_scientific(value, unique=True)
        assert Decimal(text) == Decimal(shortest), (text, shortest)
