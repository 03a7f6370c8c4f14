"""Per-model activity: slots over the window, rates, percentiles, errors, pruning."""

from __future__ import annotations

import time

import pytest

from emberd.server.http.activity import (
    RECENT_S,
    SLOT_S,
    WINDOW_S,
    Activity,
    model_key,
    percentile,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


START = 1_700_000_000.0  # a multiple of SLOT_S


def test_requests_land_in_the_slot_of_their_end() -> None:
    clock = Clock(START + 1)
    activity = Activity(clock)
    for _ in range(3):
        with activity.measure("tiny", 4) as used:
            used(20)
    clock.now = START + SLOT_S + 2
    with activity.measure("Tiny:latest", 1) as used:  # the same model, spelled otherwise
        time.sleep(0.002)
        used(5)
    models = activity.snapshot()["models"]
    assert list(models) == ["tiny:latest"]
    snapshot = activity.snapshot()
    assert snapshot["first_slot"] == START + SLOT_S - WINDOW_S + SLOT_S
    series = models["tiny:latest"]["series"]
    assert len(series) == 2  # only the steps that saw requests
    previous, current = series
    assert (previous["t"], previous["requests"], previous["texts"], previous["tokens"]) == (
        START,
        3,
        12,
        60,
    )
    assert previous["rps"] == pytest.approx(3 / SLOT_S)
    assert previous["tps"] == pytest.approx(12 / SLOT_S)
    # The current slot has lasted 2 s: its rate is over those.
    assert (current["requests"], current["rps"], current["tps"]) == (1, 0.5, 0.5)
    assert 2 <= current["p50"] <= current["p95"] <= current["p99"]  # milliseconds


def test_in_flight_counts_requests_inside_the_block() -> None:
    activity = Activity(Clock(START))
    with activity.measure("tiny", 1):
        assert activity.snapshot()["models"]["tiny:latest"]["in_flight"] == 1
    assert activity.snapshot()["models"]["tiny:latest"]["in_flight"] == 0


def test_errors_count_for_a_model_that_answered_and_names_nobody_serves_leave_no_trace() -> None:
    activity = Activity(Clock(START))
    with pytest.raises(LookupError), activity.measure("no-such-model", 1):
        raise LookupError
    assert activity.snapshot()["models"] == {}
    with activity.measure("tiny", 1):
        pass
    with pytest.raises(ValueError), activity.measure("tiny", 1):
        raise ValueError
    last = activity.snapshot()["models"]["tiny:latest"]["series"][-1]
    assert (last["requests"], last["errors"]) == (1, 1)


def test_a_load_only_request_is_not_counted() -> None:
    activity = Activity(Clock(START))
    with activity.measure("tiny", 0) as used:
        used(0)
    assert activity.snapshot()["models"] == {}


def test_a_model_quiet_for_the_whole_window_is_dropped() -> None:
    clock = Clock(START)
    activity = Activity(clock)
    with activity.measure("tiny", 1):
        pass
    clock.now = START + WINDOW_S - SLOT_S
    assert "tiny:latest" in activity.snapshot()["models"]
    clock.now = START + WINDOW_S
    assert activity.snapshot()["models"] == {}


def test_latency_samples_stay_bounded_under_load() -> None:
    activity = Activity(Clock(START))
    for _ in range(2000):
        with activity.measure("tiny", 1):
            pass
    last = activity.snapshot()["models"]["tiny:latest"]["series"][-1]
    assert last["requests"] == 2000
    entry = activity._models["tiny:latest"]
    assert len(entry.slots[-1].latencies) == 256


@pytest.mark.parametrize(("q", "value"), [(0.5, 5.0), (0.95, 10.0), (0.1, 1.0), (1.0, 10.0)])
def test_percentile_is_nearest_rank(q: float, value: float) -> None:
    assert percentile([float(v) for v in range(1, 11)], q) == value
    assert percentile([], q) == 0.0


def test_model_key_keeps_an_unparseable_name_as_sent() -> None:
    assert model_key("tiny") == "tiny:latest"
    assert model_key("a/../b") == "a/../b"


def test_recent_summaries_take_percentiles_over_the_last_seconds_together() -> None:
    clock = Clock(START)
    activity = Activity(clock)
    with activity.measure("old", 1):
        pass
    clock.now = START + RECENT_S + SLOT_S  # "old" is now out of the recent seconds
    for model in ("tiny", "tiny", "tiny-cls"):
        with activity.measure(model, 2):
            time.sleep(0.002)
    snapshot = activity.snapshot()
    assert snapshot["recent_seconds"] == RECENT_S
    assert (snapshot["recent"]["requests"], snapshot["recent"]["texts"]) == (3, 6)
    assert snapshot["models"]["tiny:latest"]["recent"]["requests"] == 2
    assert snapshot["models"]["old:latest"]["recent"]["requests"] == 0
    # The recent span so far: RECENT_S - SLOT_S of whole slots, none of the current one.
    assert snapshot["recent"]["rps"] == pytest.approx(3 / (RECENT_S - SLOT_S), abs=1e-3)
    assert 2 <= snapshot["recent"]["p50"] <= snapshot["recent"]["p99"]  # milliseconds
