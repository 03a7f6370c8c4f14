"""Per-model activity: slots over the window, rates, percentiles, errors, pruning."""

from __future__ import annotations

import pytest

from emberd.server.http.activity import SLOT_S, WINDOW_S, Activity, model_key, percentile


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
        used(5)
    models = activity.snapshot()["models"]
    assert list(models) == ["tiny:latest"]
    series = models["tiny:latest"]["series"]
    assert len(series) == WINDOW_S // SLOT_S
    previous, current = series[-2], series[-1]
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
    assert all(s["requests"] == 0 for s in series[:-2])
    assert current["p50"] > 0 and current["p50"] <= current["p95"] <= current["p99"]


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
