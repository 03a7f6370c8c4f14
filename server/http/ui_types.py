"""The answers of the page's data routes (`/ui/data/*`), as pydantic models.

They extend `/api/tags` and `/api/ps` entries with what the page shows
besides (a model's source and capabilities, a loaded model's device) and
carry the activity series; `/openapi.json` documents them from here.
"""

from __future__ import annotations

from pydantic import Field

from emberd.server.http.api_types import Body, Count, ListedModel, RunningModel, Text


class AvailableModel(ListedModel):
    """One entry of /api/tags, with where it comes from and what it does."""

    source: Text = ""  # "emberd store", "dropped file" or "Ollama store"
    capabilities: list[str] = Field(default_factory=list)  # "embedding" or "rerank"


class AvailableModels(Body):
    """GET /ui/data/models."""

    models: list[AvailableModel]


class LoadedModel(RunningModel):
    """One entry of /api/ps, with the device it runs on ("CPU", "100% GPU")."""

    device: Text = ""


class ActivitySlot(Body):
    """One step of a model's activity: rates over the step, latencies in milliseconds."""

    t: int  # the step's start, seconds since the epoch
    requests: Count = 0  # answered in the step
    texts: Count = 0  # inputs, or documents for a rerank
    rps: float  # requests per second
    tps: float  # texts (inputs, or documents for a rerank) per second
    tokens: Count = 0
    errors: Count = 0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0


class RecentActivity(Body):
    """Activity over the last `recent_seconds`: rates, and percentiles over all its requests."""

    requests: Count = 0
    texts: Count = 0
    rps: float = 0.0
    tps: float = 0.0
    errors: Count = 0
    p50: float = 0.0  # milliseconds
    p95: float = 0.0
    p99: float = 0.0


class ModelActivity(Body):
    """One model's activity over the window: the steps that saw requests, oldest first."""

    in_flight: Count = 0  # requests to it admitted and not yet answered
    recent: RecentActivity
    series: list[ActivitySlot]


class ActivitySnapshot(Body):
    """Every model's activity."""

    slot_seconds: int
    window_seconds: int
    first_slot: int  # the window's first step, seconds since the epoch
    recent_seconds: int
    recent: RecentActivity  # every model together
    models: dict[str, ModelActivity]


class LiveFigures(Body):
    """GET /ui/data/live."""

    version: Text = ""
    running: list[LoadedModel]
    queue_depth: Count = 0  # requests admitted and not yet answered, every model
    activity: ActivitySnapshot


class PlaygroundEmbeddings(Body):
    """POST /ui/data/embed: /api/embed's vectors with each input's token count."""

    model: Text = ""
    embeddings: list[list[float]]
    dimensions: Count = 0
    token_counts: list[int]  # per input, special tokens included
    total_duration: Count = 0  # nanoseconds


class LoadAnswer(Body):
    """POST /ui/data/load."""

    model: Text = ""
