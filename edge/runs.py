"""The data of one ``edge compare`` run: a :class:`Run` and its :class:`RunRow` s.

Plain dataclasses with no I/O: :mod:`edge.results` stores them in SQLite,
:mod:`edge.run_diff` compares two of them and :mod:`edge.report` renders them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class RunRow:
    """One backend + plan of a run: what was predicted, what was measured, or the error."""

    backend: str
    plan_name: str = "fp32"
    plan: dict | None = None
    size_bytes: int | None = None
    latency_ms: dict | None = None      # p50, p90, p99, mean, std, min, max
    latencies_ms: list = field(default_factory=list)  # raw samples, ms
    accuracy: float | None = None
    metric: str | None = None
    peak_rss_mb: float | None = None
    load_ms: float | None = None
    first_inference_ms: float | None = None
    # size_bytes, peak_memory_mb (= runtime_memory_mb + model_memory_mb), latency_ms, accuracy
    predicted: dict = field(default_factory=dict)
    delegation: dict | None = None
    error: str | None = None
    error_type: str | None = None
    exit_code: int | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    threads: int | None = None
    artifact_sha256: str | None = None
    artifact_path: str | None = None
    validation: dict | None = None
    context: dict = field(default_factory=dict)  # the bench run context on the device
    reasons: list = field(default_factory=list)  # the planner's reasons for this plan
    generation: dict | None = None  # language models: ttft_ms, prefill/decode tok/s, tokens, kv bytes
    baseline_rss_mb: float | None = None  # runtime imported, model not yet loaded

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunRow":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Run:
    """One compare invocation and its rows."""

    model: str
    profile: str | None = None
    target: str | None = None
    args: dict = field(default_factory=dict)
    status: str = "ok"
    context: dict = field(default_factory=dict)
    rows: list[RunRow] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    run_id: str = ""
    created_at: str = ""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["rows"] = [r.to_dict() for r in self.rows]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Run":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["rows"] = [r if isinstance(r, RunRow) else RunRow.from_dict(r) for r in data.get("rows", [])]
        return cls(**kw)
