"""Run budgets: iterations, wall time (summed across resumes), operator cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Budgets:
    max_iterations: int
    max_wall_time_s: Optional[float] = None
    max_cost_usd: Optional[float] = None

    @classmethod
    def from_config(cls, search) -> "Budgets":
        return cls(int(search.max_iterations), search.max_wall_time_s, search.max_cost_usd)


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
