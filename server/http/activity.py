"""Per-model activity over the last minutes: what the page's live charts draw.

Prometheus at `/metrics` keeps counters since start; a person looking at the
page wants rates and latencies now, per model. `Activity` keeps, per model,
one slot per `SLOT_S` seconds for the last `WINDOW_S` seconds: requests,
texts, tokens, errors and a bounded sample of latencies. Recording is a few
additions on the event loop; reading builds the series the page draws.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from emberd.models.names import ModelName

SLOT_S = 5
WINDOW_S = 600
RECENT_S = 30  # what "now" means in the summaries: the last six slots
# Latencies kept per slot: enough for stable percentiles, bounded under load.
_SAMPLES_PER_SLOT = 256


@dataclass
class _Slot:
    start: int  # seconds since the epoch, a multiple of SLOT_S
    requests: int = 0
    texts: int = 0
    tokens: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    seen: int = 0  # latencies offered to the sample, kept or not

    def sample(self, latency: float) -> None:
        """Offer one latency to the slot's uniform sample (reservoir sampling)."""
        if len(self.latencies) < _SAMPLES_PER_SLOT:
            self.latencies.append(latency)
            return
        index = random.randrange(self.seen)
        if index < _SAMPLES_PER_SLOT:
            self.latencies[index] = latency


@dataclass
class _ModelActivity:
    slots: deque[_Slot] = field(default_factory=deque)
    in_flight: int = 0

    def slot(self, now: float) -> _Slot:
        start = _slot_start(now)
        if not self.slots or self.slots[-1].start != start:
            self.slots.append(_Slot(start))
        self.forget_before(start)
        return self.slots[-1]

    def forget_before(self, start: int) -> None:
        while self.slots and self.slots[0].start <= start - WINDOW_S:
            self.slots.popleft()


def _slot_start(now: float) -> int:
    return int(now) - int(now) % SLOT_S


def percentile(sorted_values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of sorted values, nearest rank; 0 for none."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def model_key(name: str) -> str:
    """One key per model however a client spells it (`Tiny` and `tiny:latest` are one).

    Names match case-insensitively, so the key is in lower case.
    """
    try:
        return ModelName.parse(name).display.lower()
    except Exception:  # an unusable name is refused elsewhere; keep it as sent
        return name


class Activity:
    """Requests, texts, tokens, errors and latencies per model, in slots of SLOT_S seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._models: dict[str, _ModelActivity] = {}

    def measure(self, model: str, texts: int) -> contextlib.AbstractContextManager[Used]:
        """Count one request to `model` with `texts` inputs while the block runs.

        The block calls the yielded function with the tokens it used; leaving
        by an exception counts an error instead of a latency.
        """
        if texts == 0:  # a load or unload only: no embedding to count or time
            return contextlib.nullcontext(_ignore)
        key = model_key(model)
        return _Measured(self, key, self._models.setdefault(key, _ModelActivity()), texts)

    def forget_if_quiet(self, key: str, entry: _ModelActivity) -> None:
        """Drop `key` once it has neither requests in the window nor any in flight."""
        if not entry.slots and not entry.in_flight:
            self._models.pop(key, None)

    def snapshot(self) -> dict[str, Any]:
        """Per model: its steps of the last WINDOW_S seconds that saw requests, oldest first."""
        now = self.clock()
        current = _slot_start(now)
        models = {}
        everything: list[_Slot] = []
        for name, entry in list(self._models.items()):
            entry.forget_before(current)
            if not entry.slots and not entry.in_flight:
                del self._models[name]  # quiet for the whole window (or a name nobody serves)
                continue
            # Only the steps that saw requests: the page fills the quiet ones with zeros.
            series = [_slot_json(slot, now) for slot in entry.slots]
            recent = [s for s in entry.slots if s.start > current - RECENT_S]
            everything += recent
            models[name] = {
                "in_flight": entry.in_flight,
                "recent": _summary(recent, current, now),
                "series": series,
            }
        return {
            "slot_seconds": SLOT_S,
            "window_seconds": WINDOW_S,
            "first_slot": current - WINDOW_S + SLOT_S,
            "recent_seconds": RECENT_S,
            "recent": _summary(everything, current, now),
            "models": models,
        }


def _ignore(tokens: int) -> None:
    pass


Used = Callable[[int], None]


class _Measured:
    """One request in flight for `Activity.measure` (a class: cheaper than a generator)."""

    def __init__(self, activity: Activity, key: str, entry: _ModelActivity, texts: int) -> None:
        self._activity = activity
        self._key = key
        self._entry = entry
        self._texts = texts
        self._tokens = 0
        self._started = 0.0

    def __enter__(self) -> Used:
        self._entry.in_flight += 1
        self._started = time.perf_counter()
        return self._used

    def _used(self, count: int) -> None:
        self._tokens = count

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        entry, clock = self._entry, self._activity.clock
        entry.in_flight -= 1
        if kind is not None:
            # Counted for a model that has answered in the window; a name nobody
            # serves leaves no trace (clients cannot grow this table at will).
            if entry.slots:
                entry.slot(clock()).errors += 1
        else:
            slot = entry.slot(clock())
            slot.requests += 1
            slot.texts += self._texts
            slot.tokens += self._tokens
            slot.seen += 1
            slot.sample(time.perf_counter() - self._started)
        self._activity.forget_if_quiet(self._key, entry)


def measure(request: Request, model: str, texts: int) -> contextlib.AbstractContextManager[Used]:
    """`Activity.measure` of the app that serves `request`."""
    activity: Activity = request.app.state.activity
    return activity.measure(model, texts)


def _summary(slots: list[_Slot], current: int, now: float) -> dict[str, Any]:
    """Rates and latency percentiles over `slots` together (the last RECENT_S seconds)."""
    # The window ends now, inside the current slot; early on it is shorter.
    span = max(1.0, now - (current - RECENT_S + SLOT_S))
    requests = sum(s.requests for s in slots)
    texts = sum(s.texts for s in slots)
    ordered = sorted(latency for s in slots for latency in s.latencies)
    return {
        "requests": requests,
        "texts": texts,
        "rps": round(requests / span, 3),
        "tps": round(texts / span, 3),
        "errors": sum(s.errors for s in slots),
        **_percentiles(ordered),
    }


def _percentiles(ordered: list[float]) -> dict[str, float]:
    """p50, p95 and p99 of sorted seconds, in milliseconds."""
    return {f"p{q}": round(percentile(ordered, q / 100) * 1000, 2) for q in (50, 95, 99)}


def _slot_json(slot: _Slot, now: float) -> dict[str, Any]:
    # The current slot has lasted only since its start: rates over that span.
    span = max(1.0, min(float(SLOT_S), now - slot.start))
    ordered = sorted(slot.latencies)
    return {
        "t": slot.start,
        "requests": slot.requests,
        "texts": slot.texts,
        "rps": round(slot.requests / span, 3),
        "tps": round(slot.texts / span, 3),
        "tokens": slot.tokens,
        "errors": slot.errors,
        **_percentiles(ordered),
    }
