"""Go duration parsing, keep_alive semantics and Go-style duration rendering."""

from __future__ import annotations

import math

import pytest

from emberd.server.core.durations import (
    DurationError,
    format_duration,
    parse_go_duration,
    parse_go_duration_ns,
    parse_keep_alive,
)

NS = 1
US = 1_000
MS = 1_000_000
S = 1_000_000_000
M = 60 * S
H = 60 * M


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("5s", 5 * S),
        ("30s", 30 * S),
        ("1478s", 1478 * S),
        ("-5s", -5 * S),
        ("+5s", 5 * S),
        ("-0", 0),
        ("+0", 0),
        ("5.0s", 5 * S),
        ("5.6s", 5 * S + 600 * MS),
        ("5.s", 5 * S),
        (".5s", 500 * MS),
        ("1.0s", S),
        ("1.00s", S),
        ("1.004s", S + 4 * MS),
        ("1.0040s", S + 4 * MS),
        ("100.00100s", 100 * S + MS),
        ("10ns", 10 * NS),
        ("11us", 11 * US),
        ("12\u00b5s", 12 * US),
        ("12\u03bcs", 12 * US),
        ("13ms", 13 * MS),
        ("14s", 14 * S),
        ("15m", 15 * M),
        ("16h", 16 * H),
        ("3h30m", 3 * H + 30 * M),
        ("1h30m", 90 * M),
        ("300ms", 300 * MS),
        ("10.5s4m", 4 * M + 10 * S + 500 * MS),
        ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
        ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
        ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
        ("52763797000ns", 52763797000),
        ("0.3333333333333333333h", 20 * M),
        ("9007199254740993ns", (1 << 53) + 1),
        ("9223372036854775807ns", (1 << 63) - 1),
        ("9223372036854775.807us", (1 << 63) - 1),
        ("9223372036s854ms775us807ns", (1 << 63) - 1),
        ("-9223372036854775808ns", -(1 << 63)),
        ("-9223372036854775.808us", -(1 << 63)),
        ("-9223372036s854ms775us808ns", -(1 << 63)),
        ("-2562047h47m16.854775808s", -(1 << 63)),
        ("0.100000000000000000000h", 6 * M),
        ("0.830103483285477580700h", 49 * M + 48 * S + 372539827),
    ],
)
def test_parses_like_go(text: str, expected: int) -> None:
    assert parse_go_duration_ns(text) == expected


def test_seconds_are_floats() -> None:
    assert parse_go_duration("1h30m") == 5400.0
    assert parse_go_duration("300ms") == pytest.approx(0.3)
    assert parse_go_duration("-1.5s") == -1.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("abc", 'time: invalid duration "abc"'),
        ("-", 'time: invalid duration "-"'),
        ("s", 'time: invalid duration "s"'),
        (".", 'time: invalid duration "."'),
        ("-.", 'time: invalid duration "-."'),
        (".s", 'time: invalid duration ".s"'),
        ("+.s", 'time: invalid duration "+.s"'),
        (" 5s", 'time: invalid duration " 5s"'),
        ("5", 'time: missing unit in duration "5"'),
        ("3", 'time: missing unit in duration "3"'),
        ("00", 'time: missing unit in duration "00"'),
        ("1.5", 'time: missing unit in duration "1.5"'),
        ("1h5", 'time: missing unit in duration "1h5"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("5 s", 'time: unknown unit " s" in duration "5 s"'),
        ("5S", 'time: unknown unit "S" in duration "5S"'),
        ("1h2x3s", 'time: unknown unit "x" in duration "1h2x3s"'),
        ('5"', 'time: unknown unit "\\"" in duration "5\\""'),
        ("5\\", 'time: unknown unit "\\\\" in duration "5\\\\"'),
        ("5\u00e4", 'time: unknown unit "\\xc3\\xa4" in duration "5\\xc3\\xa4"'),
        ("5\n", 'time: unknown unit "\\x0a" in duration "5\\x0a"'),
        ("\ufffd", 'time: invalid duration "\\xef\\xbf\\xbd"'),
        (
            "\ufffd hello \ufffd world",
            'time: invalid duration "\\xef\\xbf\\xbd hello \\xef\\xbf\\xbd world"',
        ),
        ("\u0665s", 'time: invalid duration "\\xd9\\xa5s"'),  # a non-ASCII digit is no digit
        ("9223372036854775810ns", 'time: invalid duration "9223372036854775810ns"'),
        ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
        ("-9223372036854775809ns", 'time: invalid duration "-9223372036854775809ns"'),
        ("9223372036854776us", 'time: invalid duration "9223372036854776us"'),
        ("3000000h", 'time: invalid duration "3000000h"'),
        ("9223372036854775.808us", 'time: invalid duration "9223372036854775.808us"'),
        ("9223372036854ms775us808ns", 'time: invalid duration "9223372036854ms775us808ns"'),
    ],
)
def test_errors_match_go(text: str, message: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_go_duration(text)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (0, 0.0),
        (42, 42.0),
        (42.5, 42.5),
        (0.0, 0.0),
        (-0.0, 0.0),
        (-1, math.inf),
        (-0.5, math.inf),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("0", 0.0),
        ("0s", 0.0),
        ("-0s", 0.0),
        ("-1s", math.inf),
        ("-1m", math.inf),
    ],
)
def test_keep_alive(value: object, expected: float | None) -> None:
    result = parse_keep_alive(value)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_keep_alive_unitless_string_is_the_go_error() -> None:
    with pytest.raises(DurationError, match=r'^time: missing unit in duration "5"$'):
        parse_keep_alive("5")


@pytest.mark.parametrize(
    ("value", "kind"),
    [(True, "a boolean"), (False, "a boolean"), ([1], "an array"), ({"s": 1}, "an object")],
)
def test_keep_alive_rejects_other_types(value: object, kind: str) -> None:
    with pytest.raises(DurationError, match=f"got {kind}$"):
        parse_keep_alive(value)


def test_keep_alive_rejects_nan() -> None:
    with pytest.raises(DurationError, match="NaN"):
        parse_keep_alive(math.nan)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1e-9, "1ns"),
        (1.1e-6, "1.1µs"),
        (2.2e-3, "2.2ms"),
        (0.3, "300ms"),
        (3.3, "3.3s"),
        (300, "5m0s"),
        (245, "4m5s"),
        (245.001, "4m5.001s"),
        (5 * 3600 + 6 * 60 + 7.001, "5h6m7.001s"),
        (3600, "1h0m0s"),
        (5400, "1h30m0s"),
        (-1.5, "-1.5s"),
        (math.inf, "forever"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["5m0s", "1h30m0s", "300ms", "1.5s", "4m5.001s", "-2m3.4s"])
def test_format_round_trips(text: str) -> None:
    assert format_duration(parse_go_duration(text)) == text
