"""Durations as Ollama clients send them.

`parse_go_duration` follows Go's `time.ParseDuration` exactly, error messages
included, because clients compare against them. `parse_keep_alive` applies
Ollama's `keep_alive` rules on top, and `format_duration` renders seconds the
way Go's `Duration.String` does, for log lines.
"""

from __future__ import annotations

import math

__all__ = [
    "DurationError",
    "format_duration",
    "parse_go_duration",
    "parse_go_duration_ns",
    "parse_keep_alive",
]

_NS_PER_UNIT: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}

# Go keeps durations in an int64 of nanoseconds; the magnitude may reach 2**63
# while parsing (so that the most negative value is representable).
_LIMIT = 1 << 63
_NS_PER_S = 1_000_000_000


class DurationError(ValueError):
    """A duration that could not be parsed; the message matches Go's wording."""


def _time_quote(text: str) -> str:
    """Quote `text` as Go's time package does in its errors (not %q: see core.errors.go_quote).

    Printable ASCII is kept (with `"` and `\\` escaped); everything else is
    written as `\\x` escapes of its UTF-8 bytes.
    """
    out = ['"']
    for char in text:
        if ord(char) < 0x20 or ord(char) >= 0x80:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
        else:
            if char in '"\\':
                out.append("\\")
            out.append(char)
    out.append('"')
    return "".join(out)


def _invalid(orig: str) -> DurationError:
    return DurationError(f"time: invalid duration {_time_quote(orig)}")


def _is_digit(char: str) -> bool:
    # Only ASCII digits count, as in Go; str.isdigit accepts other scripts.
    return "0" <= char <= "9"


def _leading_int(text: str, pos: int, orig: str) -> tuple[int, int]:
    """Consume `[0-9]*` from `pos`; return (value, new position)."""
    value = 0
    while pos < len(text) and _is_digit(text[pos]):
        if value > _LIMIT // 10:
            raise _invalid(orig)
        value = value * 10 + ord(text[pos]) - ord("0")
        if value > _LIMIT:
            raise _invalid(orig)
        pos += 1
    return value, pos


def _leading_fraction(text: str, pos: int) -> tuple[int, float, int]:
    """Consume fraction digits; digits past int64 precision are read and dropped."""
    value, scale, overflow = 0, 1.0, False
    while pos < len(text) and _is_digit(text[pos]):
        if not overflow:
            candidate = value * 10 + ord(text[pos]) - ord("0")
            if value > (_LIMIT - 1) // 10 or candidate > _LIMIT:
                overflow = True
            else:
                value, scale = candidate, scale * 10
        pos += 1
    return value, scale, pos


def parse_go_duration_ns(orig: str) -> int:
    """Parse a Go duration string into integer nanoseconds, exactly as Go does.

    Raises DurationError with Go's exact message on malformed input.
    """
    text, pos, negative = orig, 0, False
    if text and text[0] in "+-":
        negative = text[0] == "-"
        pos = 1
    if text[pos:] == "0":
        return 0
    if pos == len(text):
        raise _invalid(orig)
    total = 0
    while pos < len(text):
        if not (text[pos] == "." or _is_digit(text[pos])):
            raise _invalid(orig)
        start = pos
        whole, pos = _leading_int(text, pos, orig)
        has_whole = pos != start
        frac, scale, has_frac = 0, 1.0, False
        if pos < len(text) and text[pos] == ".":
            frac_start = pos + 1
            frac, scale, pos = _leading_fraction(text, frac_start)
            has_frac = pos != frac_start
        if not has_whole and not has_frac:
            raise _invalid(orig)
        unit_start = pos
        while pos < len(text) and not (text[pos] == "." or _is_digit(text[pos])):
            pos += 1
        if pos == unit_start:
            raise DurationError(f"time: missing unit in duration {_time_quote(orig)}")
        unit_text = text[unit_start:pos]
        unit = _NS_PER_UNIT.get(unit_text)
        if unit is None:
            raise DurationError(
                f"time: unknown unit {_time_quote(unit_text)} in duration {_time_quote(orig)}"
            )
        if whole > _LIMIT // unit:
            raise _invalid(orig)
        whole *= unit
        if frac > 0:
            # Same float arithmetic as Go, so rounding of fractions agrees.
            whole += int(float(frac) * (float(unit) / scale))
            if whole > _LIMIT:
                raise _invalid(orig)
        total += whole
        if total > _LIMIT:
            raise _invalid(orig)
    if negative:
        return -total
    if total > _LIMIT - 1:
        raise _invalid(orig)
    return total


def parse_go_duration(text: str) -> float:
    """Parse a Go duration such as `"1h30m"`, `"300ms"` or `"-1.5s"`; return seconds.

    Raises DurationError with Go's exact message on malformed input.
    """
    return parse_go_duration_ns(text) / _NS_PER_S


MAX_DURATION_SECONDS = (2**63 - 1) / 1e9


def parse_keep_alive(value: object) -> float | None:
    """Interpret a request's `keep_alive` value with Ollama's rules.

    None means absent (keep the current setting). A JSON number is seconds and
    a string is a Go duration; any negative value means forever (`math.inf`).
    Raises DurationError for unitless strings, bad durations and other types.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DurationError(
            "invalid keep_alive: expected a number of seconds or a duration string "
            f'such as "5m", got {_json_type_name(value)}'
        )
    if isinstance(value, str):
        seconds = parse_go_duration(value)
    else:
        seconds = float(value)
        if math.isnan(seconds):
            raise DurationError("invalid keep_alive: NaN is not a duration")
    # Past Go's longest duration (about 292 years) is forever too.
    return math.inf if seconds < 0 or seconds > MAX_DURATION_SECONDS else seconds


def _json_type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _format_fraction(value: int, digits: int) -> tuple[str, int]:
    """Split `value` into (".fraction" without trailing zeros, value // 10**digits)."""
    fraction = f"{value % 10**digits:0{digits}d}".rstrip("0")
    return ("." + fraction if fraction else ""), value // 10**digits


def format_duration(seconds: float) -> str:
    """Render seconds as Go's `Duration.String` would (`"5m0s"`, `"300ms"`).

    Infinity renders as `"forever"`.
    """
    if math.isinf(seconds):
        return "forever" if seconds > 0 else "-forever"
    ns = round(seconds * _NS_PER_S)
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < _NS_PER_S:
        if ns < 1_000:
            return f"{sign}{ns}ns"
        if ns < 1_000_000:
            fraction, whole = _format_fraction(ns, 3)
            return f"{sign}{whole}{fraction}µs"
        fraction, whole = _format_fraction(ns, 6)
        return f"{sign}{whole}{fraction}ms"
    fraction, whole_seconds = _format_fraction(ns, 9)
    text = f"{whole_seconds % 60}{fraction}s"
    minutes = whole_seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        hours = minutes // 60
        if hours:
            text = f"{hours}h{text}"
    return sign + text
