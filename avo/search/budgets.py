"""Run budgets: iterations, wall time (summed across resumes), operator cost; and the early stop
of a search whose latest iterations all failed the same way (a setup problem, not a search)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

# Iteration outcomes that are failures (a duplicate or a rejected correct kernel is not).
FAILED = ("operator_error", "import_error", "compile_error", "incorrect", "timeout", "crash")


@dataclass(frozen=True)
class Budgets:
    max_iterations: int
    max_wall_time_s: Optional[float] = None
    max_cost_usd: Optional[float] = None
    # This many consecutive iterations failing with the same status and message end the search
    # (0: never).
    stop_after_same_failures: int = 0

    @classmethod
    def from_config(cls, search) -> "Budgets":
        return cls(int(search.max_iterations), search.max_wall_time_s, search.max_cost_usd,
                   int(getattr(search, "stop_after_same_failures", 0) or 0))


@dataclass(frozen=True)
class Usage:
    iterations: int
    elapsed_s: float
    cost_usd: float


def exhausted(b: Budgets, u: Usage) -> Optional[str]:
    """Why the run must stop now, or None."""
    if u.iterations >= b.max_iterations:
        return f"search.max_iterations={b.max_iterations} reached ({u.iterations} iterations)"
    if b.max_wall_time_s is not None and u.elapsed_s >= b.max_wall_time_s:
        return f"search.max_wall_time_s={b.max_wall_time_s:g} reached ({u.elapsed_s:.0f} s elapsed)"
    if b.max_cost_usd is not None and u.cost_usd >= b.max_cost_usd:
        return f"search.max_cost_usd={b.max_cost_usd:g} reached (${u.cost_usd:.2f} spent)"
    return None


def remaining(b: Budgets, u: Usage) -> str:
    parts = [f"{max(0, b.max_iterations - u.iterations)} it"]
    if b.max_wall_time_s is not None:
        left = max(0.0, b.max_wall_time_s - u.elapsed_s)
        parts.append(f"{left / 60:.0f} min" if left >= 120 else f"{left:.0f} s")
    if b.max_cost_usd is not None:
        parts.append(f"${max(0.0, b.max_cost_usd - u.cost_usd):.2f}")
    return ", ".join(parts) + " left"


def _failure_key(status: str, message: Optional[str]) -> tuple[str, str]:
    # Which iteration or candidate said it is not what makes two failures alike; numbers that
    # measure something (an error, a time) are.
    line = next((ln.strip() for ln in (message or "").splitlines() if ln.strip()), "")
    line = re.sub(r"candidates/\d+", "candidates/N", line)
    line = re.sub(r"\b(candidate|iteration|version|v)\s*#?\d+\b", r"\1 N", line, flags=re.I)
    return status, line


def same_failures(recent: Iterable[tuple[str, Optional[str]]], k: int) -> Optional[str]:
    """Why the search must stop when the last `k` iterations' (status, message), oldest first,
    all failed alike; else None."""
    recent = list(recent)[-k:] if k > 0 else []
    if len(recent) < k or any(status not in FAILED for status, _ in recent):
        return None
    keys = {_failure_key(status, msg) for status, msg in recent}
    if len(keys) != 1:
        return None
    status, line = keys.pop()
    return (f"the last {k} iterations all failed the same way ({status}: {line or 'no message'}); "
            f"fix that and resume, or set search.stop_after_same_failures=0")
