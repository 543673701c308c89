"""What one evaluation will do: settings as plain numbers, the shapes each stage runs, the limits.

Pure functions of their arguments (no torch), shared by the parent and the child process.
"""

from __future__ import annotations

import dataclasses
import signal
from typing import Any, Optional, Sequence

from avo.config import EvaluatorConfig
from avo.suites import Shape, available, load

# The stages a caller may ask for. A failure can also name "import" (the first half of compile).
STAGES = ("compile", "correctness", "benchmark", "reverify")
BASELINES = ("cudnn", "fa2", "fa3", "fa4")

# Correctness adds, per distinct (heads, head dim, causal) class of a suite, one small-batch shape
# whose seqlen is not a multiple of any tile size (odd, just past a power of two).
OFF_TILE_SEQLEN = {"cuda": 1031, "cpu": 131}
# The noise of a suite speedup, honestly: the per-shape standard errors (which see the drift
# within one measurement, see judge.block_se) cannot see how two evaluations in two sets of
# processes differ. This floor (a standard deviation of log ratio) stands for that, from
# repeated evaluations of one kernel (bench/results/*noise*); it is added in quadrature.
NOISE_FLOOR = {"cuda": 0.004, "cpu": 0.02}
# Reported intervals are +- INTERVAL_Z sigma; acceptance needs a gain beyond ACCEPT_Z sigma,
# one-sided: an identical kernel passes about 1 % of the time at most.
INTERVAL_Z = 2.0
ACCEPT_Z = 2.33
# Our own start-up (Python + torch import) is not the kernel's time; it gets a fixed allowance.
STARTUP_LIMIT_S = 120.0


def settings_dict(settings: Any) -> dict[str, Any]:
    """EvaluatorConfig, a DictConfig or any object with those attributes -> plain dict."""
    defaults = dataclasses.asdict(EvaluatorConfig())
    if settings is None:
        return defaults
    out = {}
    for key, default in defaults.items():
        value = settings.get(key, default) if isinstance(settings, dict) else getattr(settings, key, default)
        out[key] = type(default)(value) if value is not None else default
    return out


WORKER_START_S = 30.0


def stage_limits(settings: dict[str, Any]) -> dict[str, float]:
    return {
        "startup": max(STARTUP_LIMIT_S, settings["compile_timeout_s"]),
        # Starting the workers (python, torch, CUDA: seconds on a loaded machine) is ours, not the kernel's.
        "import": settings["compile_timeout_s"] + WORKER_START_S,
        "compile": settings["compile_timeout_s"],
        "correctness": settings["correctness_timeout_s"],
        "benchmark": settings["benchmark_timeout_s"],
        "reverify": settings["correctness_timeout_s"],
    }


def correctness_shapes(suite: Sequence[Shape], device: str) -> list[Shape]:
    """Small and awkward shapes: one per class of the suite (first, so the compile stage warms the
    class the suite times), then every smoke shape (seqlen 100/257, causal, GQA 4:1, d64/d128)."""
    smoke = load("smoke")
    seen = {(s.heads_q, s.heads_kv, s.head_dim, s.causal) for s in smoke}
    extra: list[Shape] = []
    for s in suite:
        key = (s.heads_q, s.heads_kv, s.head_dim, s.causal)
        if key in seen:
            continue
        seen.add(key)
        extra.append(Shape(min(s.batch, 2), OFF_TILE_SEQLEN.get(device, 131), *key))
    if not extra:
        # The suite's classes are all in smoke: lead with the smoke shape of the suite's first class.
        first = (suite[0].heads_q, suite[0].heads_kv, suite[0].head_dim, suite[0].causal) if suite else None
        smoke.sort(key=lambda s: (s.heads_q, s.heads_kv, s.head_dim, s.causal) != first)
    return extra + smoke


def shape_dict(s: Shape) -> dict[str, Any]:
    return dataclasses.asdict(s)


def shape_from(d: dict[str, Any]) -> Shape:
    return Shape(**d)


def resolve_suite(suite: str | Sequence[Shape]) -> tuple[str, list[Shape]]:
    """(name, shapes); a list of shapes is named after the suite it equals, else "custom"."""
    if isinstance(suite, str):
        return suite, load(suite)
    shapes = [s if isinstance(s, Shape)
              else Shape(**(dataclasses.asdict(s) if dataclasses.is_dataclass(s) else dict(s)))
              for s in suite]
    return next((name for name in available() if load(name) == shapes), "custom"), shapes


def exit_text(rc: Optional[int]) -> str:
    """A process's exit status in words: "exit code 3", "signal SIGSEGV"."""
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"
