"""The one interface every variation operator implements (knob, avo agent, external cli agent)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from avo.evaluate.result import EvalResult


@dataclass
class Proposal:
    source: str  # the whole new kernel file
    rationale: str  # why this change should help; becomes the lineage commit message
    tokens: int = 0
    cost_usd: float = 0.0
    transcript: Optional[str] = None  # path of the saved transcript (JSONL), if any


@dataclass
class VariationContext:
    iteration: int
    parent_id: str  # archive id of the version being varied
    parent_source: str
    parent_result: Optional[EvalResult]
    run_dir: Path
    workspace: Path  # a scratch directory the operator may write in; nothing outside it
    rng: random.Random
    # Evaluate a source file now (the agent's compile/test/bench tools); args: path, suite name.
    evaluate: Callable[..., EvalResult]
    lineage: Any = None  # avo.lineage.Lineage
    archive: Any = None  # avo.archive.Archive
    directive: Optional[str] = None  # the supervisor's intervention, when stagnating
    extra: dict[str, Any] = field(default_factory=dict)


class OperatorError(RuntimeError):
    """The operator could not produce a candidate (budget, provider failure); the step is recorded."""


class FatalOperatorError(OperatorError):
    """No later step can succeed either (the provider refused the credentials, does not know the
    model, or refused the same request twice): the search stops at once, the step is not recorded,
    and the same command resumes once the cause is fixed."""


class Operator(Protocol):
    name: str

    def propose(self, ctx: VariationContext) -> Proposal: ...
