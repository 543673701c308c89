"""The acceptance rule, as pure functions of evaluator results.

avo (the paper's): a correct candidate is confirmed in ONE interleaved evaluation against the
incumbent, which must re-verify every shape on fresh inputs after timing and whose median time
ratio must beat 1 by more than both `min_gain` and the evaluator's acceptance margin (one-sided
99 %: the per-shape errors plus a run-to-run floor, avo.evaluate.plan.ACCEPT_Z); clock drift between separate processes (15 % on an H100) cannot fake a win
that way. A screen skips the confirmation for candidates whose own score is far below the best
(more than `SCREEN_SLACK` under it: no drift explains that), and for incorrect ones.
greedy (the comparison): correct and a suite score above best × (1 + min_gain), no confirmation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from avo.evaluate.result import EvalResult

# Separate measurements of one kernel can differ by this much; within it, let the interleaved
# confirmation decide rather than the (drift-prone) comparison of two separate runs.
SCREEN_SLACK = 0.1


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    label: str  # accepted | screened | failed:<stage> | slower | not-confirmed | confirm-failed:<stage>
    reason: str

    @property
    def passed_screen(self) -> bool:
        return self.label == "screened"


def _failed(result: EvalResult, prefix: str = "failed") -> Verdict:
    stage = result.stage or result.status
    return Verdict(False, f"{prefix}:{stage}", f"{result.status} at {stage}: {result.message}".strip())


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def screen(result: EvalResult, best_score: Optional[float], slack: float = SCREEN_SLACK) -> Verdict:
    """avo, step 1: worth a confirmation run?"""
    if not result.ok:
        return _failed(result)
    if result.score is None:
        return Verdict(False, "failed:benchmark", "no score was measured")
    bar = None if best_score is None else best_score * (1.0 - slack)
    if bar is not None and result.score <= bar:
        return Verdict(False, "slower", f"score {_fmt(result.score)} <= {1 - slack:g} x best {_fmt(best_score)}")
    return Verdict(False, "screened", f"score {_fmt(result.score)} vs best {_fmt(best_score)}: confirm")


def confirm(result: EvalResult, min_gain: float) -> Verdict:
    """avo, step 2: the interleaved candidate-vs-incumbent evaluation."""
    if not result.ok:
        return _failed(result, "confirm-failed")
    ratio, spread = result.incumbent_ratio, result.incumbent_ratio_spread
    if result.shapes and any(s.error is None for s in result.shapes):
        return Verdict(False, "confirm-failed:reverify",
                       "the confirmation did not re-verify every shape on fresh inputs (evaluator.reverify)")
    if ratio is None:
        why = getattr(result, "incumbent_status", None)
        return Verdict(False, "confirm-failed:benchmark",
                       "the confirmation measured no incumbent ratio" + (f" ({why})" if why else ""))
    margin = max(min_gain, spread or 0.0)
    if ratio > 1.0 + margin:
        return Verdict(True, "accepted", f"{ratio:.4f}x the incumbent (needed > {1 + margin:.4f})")
    return Verdict(False, "not-confirmed", f"{ratio:.4f}x the incumbent, needed > {1 + margin:.4f} "
                                            f"(min_gain {min_gain:g}, spread {_fmt(spread)})")


def greedy(result: EvalResult, best_score: Optional[float], min_gain: float) -> Verdict:
    if not result.ok:
        return _failed(result)
    if result.score is None:
        return Verdict(False, "failed:benchmark", "no score was measured")
    if best_score is None or result.score > best_score * (1.0 + min_gain):
        return Verdict(True, "accepted", f"score {_fmt(result.score)} > best {_fmt(best_score)} x {1 + min_gain:g}")
    return Verdict(False, "slower", f"score {_fmt(result.score)} <= best {_fmt(best_score)} x {1 + min_gain:g}")
