"""The stagnation supervisor: a pure function of the search history.

After `patience` iterations without an acceptance it intervenes, alternating two moves:
- review: the operator is told to review what was tried (lineage + archive) and pick a new direction;
- restart: the search varies an earlier lineage version from now on (until the next acceptance or
  intervention), and the operator is told so. Without an earlier version it reviews instead.
The intervention is stored in the iteration's archive row (`intervention`, `directive`, `parent`),
so a resumed run reaches the same decisions from the archive alone.

The directive text comes from prompts/supervisor.md when present, rendered with the fields
{kind} {streak} {patience} {best_score} {restart_from} {restart_version} {restart_score} {recent}
{instruction} (the built-in sentence below); unknown fields are left as written.
With search.supervisor=model the directive is rewritten by avo.search.model_supervisor (the kind
and the restart target stay the ones decided here); this text is its fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from avo.prompts import render

REVIEW = "review"
RESTART = "restart"

_BUILTIN = {
    REVIEW: ("The last {streak} attempts did not beat the best version (score {best_score}). Step back: "
             "review the lineage and the archive, say why those attempts did not help, and pick a "
             "direction that has not been tried yet."),
    RESTART: ("The last {streak} attempts did not beat the best version (score {best_score}). Start from "
              "the earlier version v{restart_version} (candidate {restart_from}, score {restart_score}) "
              "and take a different direction from there; the result must still beat the best."),
}


@dataclass(frozen=True)
class Intervention:
    kind: str  # review | restart
    directive: str
    restart_from: Optional[int] = None  # candidate id of the version to vary from now on
    # Who wrote the directive (template | model); why the model's answer was not used; what its
    # call spent (the engine adds it to the iteration's row, so budgets count it).
    source: str = "template"
    error: Optional[str] = None
    tokens: int = 0
    cost_usd: float = 0.0


def stagnation(history: Sequence[Any]) -> int:
    """Iterations since the last acceptance, counted from the last intervention when there was one."""
    streak = 0
    for row in reversed(history):
        if row.accepted:
            break
        streak += 1
        if row.intervention:
            break
    return streak


def choose_parent(history: Sequence[Any], versions: Sequence[Any]) -> int:
    """Candidate id of the version to vary next: the best, unless a restart is in force."""
    best = versions[-1].candidate
    for row in reversed(history):
        if row.accepted:
            return best
        if row.intervention == RESTART:
            return row.parent
        if row.intervention:
            return best
    return best


def _recent(history: Sequence[Any], n: int) -> str:
    lines = []
    for row in list(history)[-n:]:
        why = (row.rationale or "").strip().splitlines()
        lines.append(f"- #{row.id} [{row.verdict}] {why[0] if why else ''}".rstrip())
    return "\n".join(lines)


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def supervise(history: Sequence[Any], versions: Sequence[Any], patience: int,
              template: Optional[str] = None) -> Optional[Intervention]:
    """The intervention to apply at the next iteration, or None."""
    if patience <= 0 or not versions:
        return None
    streak = stagnation(history)
    if streak < patience:
        return None
    past = [row for row in history if row.intervention]
    earlier = list(versions[:-1])
    kind = RESTART if (len(past) % 2 == 1 and earlier) else REVIEW
    fields: dict[str, Any] = {"kind": kind, "streak": streak, "patience": patience,
                              "best_score": _fmt(versions[-1].score), "recent": _recent(history, streak),
                              "restart_from": None, "restart_version": None, "restart_score": None}
    target = None
    if kind == RESTART:
        restarts = sum(1 for row in past if row.intervention == RESTART)
        target = earlier[-(1 + restarts % len(earlier))]  # walk further back on each restart
        fields.update(restart_from=target.candidate, restart_version=target.version,
                      restart_score=_fmt(target.score))
    instruction = render(_BUILTIN[kind], fields)
    text = render(template, {**fields, "instruction": instruction}) if template else instruction
    if not template:
        text += "\nRecent attempts:\n" + fields["recent"]
    return Intervention(kind, text.strip(), target.candidate if target else None)
