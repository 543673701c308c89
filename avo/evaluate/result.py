"""The evaluator's verdict: one record per candidate, written as JSON and read by the search."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

# Statuses, in the order the stages run. Only "ok" may be accepted by a search.
OK = "ok"
IMPORT_ERROR = "import_error"
COMPILE_ERROR = "compile_error"
INCORRECT = "incorrect"
TIMEOUT = "timeout"
CRASH = "crash"
STATUSES = (OK, IMPORT_ERROR, COMPILE_ERROR, INCORRECT, TIMEOUT, CRASH)


@dataclass
class ShapeResult:
    label: str
    shape: dict[str, Any]
    tflops: Optional[float] = None  # median over repeats
    time_ms: Optional[float] = None
    wall_ms: Optional[float] = None  # back-to-back wall time per call (a cross-check of time_ms)
    spread: Optional[float] = None  # (p80 - p20) / median of the repeat times
    baselines: dict[str, Optional[float]] = field(default_factory=dict)  # name -> TFLOP/s
    # Timed interleaved with the candidate: median of per-repeat (baseline time / candidate time),
    # > 1 = the candidate is faster; and the standard error of its log.
    baseline_ratios: dict[str, float] = field(default_factory=dict)
    baseline_ratio_se: dict[str, Optional[float]] = field(default_factory=dict)
    # With an incumbent: median of interleaved (incumbent time / candidate time); > 1 = faster.
    incumbent_ratio: Optional[float] = None
    incumbent_ratio_spread: Optional[float] = None  # (p80 - p20) of those ratios
    incumbent_ratio_se: Optional[float] = None  # standard error of log(median ratio)
    error: Optional[float] = None  # relative error of the last correctness check
    incumbent_tflops: Optional[float] = None  # the incumbent's median in the interleaved timing
    reported_ms: Optional[float] = None  # the worker's own median time (on a GPU only checked: time_ms is the judge's clock)
    gpu_state: dict[str, Any] = field(default_factory=dict)  # NVML clocks/temperature/power before and after
    overhead_ms: dict[str, Any] = field(default_factory=dict)  # the null worker's protocol overhead the judge subtracts


@dataclass
class EvalResult:
    status: str
    stage: Optional[str] = None  # the stage that failed: import | compile | correctness | benchmark | reverify
    message: str = ""  # trimmed, actionable
    suite: str = ""
    device: str = ""
    compile_s: Optional[float] = None
    wall_s: Optional[float] = None
    shapes: list[ShapeResult] = field(default_factory=list)
    score: Optional[float] = None  # geometric mean TFLOP/s over the suite
    baseline_scores: dict[str, Optional[float]] = field(default_factory=dict)
    # Geomean over the shapes of the interleaved per-shape speedups (of TFLOP/s ratios for results
    # written before baselines were interleaved), and its noise: two standard errors, ratio units.
    speedups: dict[str, Optional[float]] = field(default_factory=dict)
    speedup_noise: dict[str, Optional[float]] = field(default_factory=dict)
    incumbent_ratio: Optional[float] = None  # geomean of per-shape interleaved ratios
    # The noise of incumbent_ratio: two standard errors of the geomean, from the per-shape
    # standard errors (ratio units). Acceptance needs a gain beyond it.
    incumbent_ratio_spread: Optional[float] = None
    env: dict[str, Any] = field(default_factory=dict)
    # "ok", or why the incumbent could not be compared ("incorrect: ..."); None without an incumbent.
    incumbent_status: Optional[str] = None
    # Correctness checks run: [{"label", "error"}], the worst error of each shape's checks.
    checks: list[dict[str, Any]] = field(default_factory=list)
    # How the measurement was made where it departs from the plan (a baseline unavailable, GQA
    # run with expanded k/v, a warm-up that did not settle, ...).
    notes: list[str] = field(default_factory=list)
    # How the kernel's process was isolated: {"kind": "bubblewrap" | "process", "detail": ...}.
    isolation: dict[str, Any] = field(default_factory=dict)
    # False when the kernel ran a library's attention (allowed for a wrapping seed only); None on a CPU.
    own_code: Optional[bool] = None
    # GPU: "release-flag" (each timed call released by the judge once its inputs are in place, so
    # no host launch time is timed and the judge's clock bounds every report) or
    # "launch-cover-spin" (the weaker fallback where the flag cannot be used); None on a CPU.
    timing: Optional[str] = None
    # The judge's own traceback when it failed (status crash, "the judge failed in stage ..."),
    # credentials cut out by the search's side.
    detail: str = ""
    # Seconds per stage, and within the benchmark per part of the judge's work (inputs, warm-up,
    # calls, input and output checks, probes): where an evaluation's wall time went.
    judge_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalResult":
        d = dict(d)
        known = {f for f in ShapeResult.__dataclass_fields__}
        d["shapes"] = [ShapeResult(**{k: v for k, v in s.items() if k in known}) for s in d.get("shapes", [])]
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @classmethod
    def read(cls, path: str | Path) -> "EvalResult":
        return cls.from_dict(json.loads(Path(path).read_text()))


def geomean(values) -> Optional[float]:
    vals = [v for v in values if v is not None]
    if not vals or any(v <= 0 for v in vals):
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))
