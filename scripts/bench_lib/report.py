"""The targets of the throughput issue, the printed table and the JSON report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scripts.bench_lib.results import (
    BATCH_LONG,
    BATCH_SHORT,
    COLD,
    CONC,
    LATENCY_P50,
    LEAK,
    METRICS,
    Measurement,
    to_json,
)

MET = "met"
MISSED = "missed"
UNKNOWN = "n/a"
EMBERD = "emberd"
LLAMA_SERVER = "llama-server"
SENTENCE_TRANSFORMERS = "sentence-transformers"


@dataclass(frozen=True)
class Target:
    """One goal of the issue and whether this run met it."""

    goal: str
    status: str  # MET, MISSED or UNKNOWN (a figure is missing)
    measured: str


def _value(ms: Sequence[Measurement], contender: str, metric: str) -> float | None:
    for m in ms:
        if m.contender == contender and m.metric == metric:
            return m.value
    return None


def _judge(goal: str, ok: bool | None, measured: str) -> Target:
    return Target(goal, UNKNOWN if ok is None else MET if ok else MISSED, measured)


def _ratio_target(ms: Sequence[Measurement], metric: str, other: str, minimum: float) -> Target:
    ours, theirs = _value(ms, EMBERD, metric), _value(ms, other, metric)
    goal = f"{metric}: emberd >= {minimum:g}x {other}"
    if ours is None or theirs is None:
        return _judge(goal, None, "not measured")
    ratio = ours / theirs
    return _judge(goal, ratio >= minimum, f"{ratio:.2f}x ({ours:.0f} vs {theirs:.0f} texts/s)")


def evaluate(ms: Sequence[Measurement], model: str) -> list[Target]:
    """Every target of the issue against this run's measurements."""
    targets = [_ratio_target(ms, m, LLAMA_SERVER, 1.25) for m in (BATCH_SHORT, BATCH_LONG, CONC)]
    targets += [_ratio_target(ms, m, SENTENCE_TRANSFORMERS, 1.1) for m in (BATCH_SHORT, BATCH_LONG)]
    conc, short = _value(ms, EMBERD, CONC), _value(ms, EMBERD, BATCH_SHORT)
    targets.append(
        _judge(
            "conc-32: emberd >= 85% of its own batch-short rate",
            None if conc is None or short is None else conc >= 0.85 * short,
            "not measured" if conc is None or short is None else f"{conc / short:.0%}",
        )
    )
    ours, theirs = _value(ms, EMBERD, LATENCY_P50), _value(ms, LLAMA_SERVER, LATENCY_P50)
    targets.append(
        _judge(
            "latency p50: emberd <= llama-server + 1 ms",
            None if ours is None or theirs is None else ours <= theirs + 1.0,
            "not measured"
            if ours is None or theirs is None
            else f"{ours:.2f} ms vs {theirs:.2f} ms ({ours - theirs:+.2f} ms)",
        )
    )
    cold = _value(ms, EMBERD, COLD)
    goal = "cold: emberd's first request < 300 ms" + (
        "" if model == "all-minilm" else f" (set for all-minilm; this is {model})"
    )
    targets.append(
        _judge(
            goal,
            None if cold is None else cold < 300.0,
            "not measured" if cold is None else f"{cold:.0f} ms",
        )
    )
    leak = _value(ms, EMBERD, LEAK)
    targets.append(
        _judge(
            "memory: RSS grows < 5% over the leak check",
            None if leak is None else leak < 5.0,
            "not measured" if leak is None else f"{leak:+.2f}%",
        )
    )
    return targets


def _format(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:+.2f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(ms: Sequence[Measurement], contenders: Sequence[str]) -> str:
    """Metrics down, contenders across; each figure with its ratio to llama-server."""
    present = [c for c in contenders if any(m.contender == c for m in ms)]
    header = ["metric", "unit", *present]
    rows: list[list[str]] = [header]
    for metric in METRICS:
        found = [m for m in ms if m.metric == metric]
        if not found:
            continue
        base = _value(ms, LLAMA_SERVER, metric)
        row = [metric, found[0].unit]
        for contender in present:
            value = _value(ms, contender, metric)
            cell = "-" if value is None else _format(value, found[0].unit)
            if value is not None and base and contender != LLAMA_SERVER and metric != LEAK:
                cell += f" ({value / base:.2f}x)"
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i > 1 else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def targets_text(targets: Sequence[Target]) -> str:
    """One line per target."""
    return "\n".join(f"[{t.status:^6}] {t.goal}: {t.measured}" for t in targets)


def document(
    ms: Sequence[Measurement], targets: Sequence[Target], **context: Any
) -> dict[str, Any]:
    """The JSON report: context (model, machine, sizes, sweep...), figures and targets."""
    return {
        **context,
        "measurements": to_json(ms),
        "targets": [asdict(t) for t in targets],
    }
