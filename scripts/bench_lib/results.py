"""What the bench measures: one `Measurement` per contender and metric, as JSON too."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# Metric names, in report order.
BATCH_SHORT = "batch-short"
BATCH_LONG = "batch-long"
CONC = "conc-32"
LATENCY_P50 = "latency-p50"
LATENCY_P99 = "latency-p99"
COLD = "cold"
RSS = "rss"
LEAK = "leak-growth"
METRICS: tuple[str, ...] = (
    BATCH_SHORT,
    BATCH_LONG,
    CONC,
    LATENCY_P50,
    LATENCY_P99,
    COLD,
    RSS,
    LEAK,
)
# Units; throughput is better higher, the rest lower.
TEXTS_PER_S = "texts/s"
MS = "ms"
MB = "MB"
PERCENT = "%"
UNITS: Mapping[str, str] = {
    BATCH_SHORT: TEXTS_PER_S,
    BATCH_LONG: TEXTS_PER_S,
    CONC: TEXTS_PER_S,
    LATENCY_P50: MS,
    LATENCY_P99: MS,
    COLD: MS,
    RSS: MB,
    LEAK: PERCENT,
}


@dataclass(frozen=True)
class Measurement:
    """One figure: `value` in `UNITS[metric]` for `contender`; `note` says how it was taken."""

    contender: str
    metric: str
    value: float
    note: str = ""

    @property
    def unit(self) -> str:
        """The metric's unit."""
        return UNITS[self.metric]


def to_json(measurements: Iterable[Measurement]) -> list[dict[str, Any]]:
    """Plain JSON objects, unit included."""
    return [{**asdict(m), "unit": m.unit} for m in measurements]


def from_json(items: Sequence[Mapping[str, Any]]) -> list[Measurement]:
    """The inverse of `to_json` (the unit is implied by the metric)."""
    return [
        Measurement(
            contender=str(item["contender"]),
            metric=str(item["metric"]),
            value=float(item["value"]),
            note=str(item.get("note", "")),
        )
        for item in items
    ]
