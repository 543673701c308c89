"""Search strategies behind one interface, chosen by `search.strategy` (config group `search=`).

A strategy decides two things per iteration: which lineage version the operator varies (and any
supervisor intervention), and whether the evaluated candidate is accepted. The engine
(avo.search.engine) does the rest, identically for every strategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

from avo.config import ConfigError
from avo.evaluate.result import EvalResult
from avo.search import acceptance, supervisor
from avo.search.acceptance import Verdict
from avo.search.supervisor import Intervention


@dataclass(frozen=True)
class Plan:
    parent: int  # candidate id of the version to vary (0 = the seed)
    intervention: Optional[Intervention] = None


class Strategy(Protocol):
    name: str
    confirms: bool  # True: a screened candidate gets an interleaved confirmation run

    def plan(self, history: Sequence[Any], versions: Sequence[Any]) -> Plan: ...

    def judge(self, result: EvalResult, best_score: Optional[float]) -> Verdict: ...

    def judge_confirmation(self, result: EvalResult) -> Verdict: ...


class AvoStrategy:
    """The paper's: one lineage, vary the best, confirm against the incumbent, supervise."""

    name = "avo"
    confirms = True

    def __init__(self, min_gain: float, patience: int, template: Optional[str] = None):
        self.min_gain, self.patience, self.template = min_gain, patience, template

    def plan(self, history, versions) -> Plan:
        step = supervisor.supervise(history, versions, self.patience, self.template)
        if step is not None and step.kind == supervisor.RESTART:
            return Plan(step.restart_from, step)
        return Plan(supervisor.choose_parent(history, versions) if step is None else versions[-1].candidate, step)

    def judge(self, result, best_score) -> Verdict:
        return acceptance.screen(result, best_score)

    def judge_confirmation(self, result) -> Verdict:
        return acceptance.confirm(result, self.min_gain)


class GreedyStrategy:
    """Comparison baseline: vary the best, accept on the suite score alone."""

    name = "greedy"
    confirms = False

    def __init__(self, min_gain: float):
        self.min_gain = min_gain

    def plan(self, history, versions) -> Plan:
        return Plan(versions[-1].candidate)

    def judge(self, result, best_score) -> Verdict:
        return acceptance.greedy(result, best_score, self.min_gain)

    def judge_confirmation(self, result) -> Verdict:  # never called: confirms is False
        raise NotImplementedError


def make_strategy(search: Any, supervisor_template: Optional[str] = None) -> Strategy:
    if search.strategy == "avo":
        return AvoStrategy(search.min_gain, search.stagnation_patience, supervisor_template)
    if search.strategy == "greedy":
        return GreedyStrategy(search.min_gain)
    raise ConfigError(f"search.strategy={search.strategy!r} is not one of avo, greedy")
