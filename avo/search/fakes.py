"""A stand-in evaluator for tests and demos: scores a kernel from its KNOBS, instantly.

It has the real evaluator's call shape (kernel path, incumbent=, stages=) and returns real
EvalResult records, so the search engine cannot tell the difference; nothing is compiled or timed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from avo.evaluate.result import COMPILE_ERROR, OK, EvalResult, ShapeResult
from avo.operators.knob import parse_knobs


# A kernel the fake evaluator can score: only its KNOBS matter.
KERNEL = '''"""A stand-in kernel for search tests; the fake evaluator scores its KNOBS."""

KNOBS = {"a": 1, "b": 1}
KNOB_SPACE = {"a": [1, 2, 4, 8], "b": [1, 2, 4, 8]}


def attention(q, k, v, causal=False, softmax_scale=None):
    raise NotImplementedError("scored by avo.search.fakes.FakeEvaluator, never run")
'''


class ScriptedOperator:
    """Proposes the given KNOBS settings in order (a dict; None: an OperatorError; "fatal": a
    FatalOperatorError; "broken": a kernel the fake evaluator fails; "same": the parent unchanged),
    and remembers what it was shown; a test's operator with no randomness at all."""

    name = "scripted"

    def __init__(self, steps: list[Optional[dict[str, Any]]], cost_usd: float = 0.0, tokens: int = 0):
        self.steps, self.cost_usd, self.tokens = list(steps), cost_usd, tokens
        self.seen: list[dict[str, Any]] = []

    def propose(self, ctx):
        from avo.operators.base import FatalOperatorError, OperatorError, Proposal
        from avo.operators.knob import rewrite_knobs

        self.seen.append({"iteration": ctx.iteration, "parent": ctx.parent_id, "directive": ctx.directive})
        step = self.steps[(ctx.iteration - 1) % len(self.steps)]
        if step is None:
            raise OperatorError("scripted failure")
        if step == "fatal":
            raise FatalOperatorError("the provider rejected the credentials (scripted)")
        if step in ("broken", "same"):
            source = ctx.parent_source + ("raise_compile_error = True\n" if step == "broken" else "")
            return Proposal(source=source, rationale=step, tokens=self.tokens, cost_usd=self.cost_usd)
        spec = parse_knobs(ctx.parent_source)
        source = rewrite_knobs(ctx.parent_source, spec, {**spec.values, **step})
        return Proposal(source=source, rationale=f"set {step}", tokens=self.tokens, cost_usd=self.cost_usd)


def default_score(knobs: dict[str, Any]) -> float:
    """Larger numeric knobs are faster, with diminishing returns."""
    score = 1.0
    for value in knobs.values():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            score *= 1.0 + float(value) ** 0.5
    return score


class FakeEvaluator:
    def __init__(self, score: Callable[[dict[str, Any]], float] = default_score, spread: float = 0.01,
                 baselines: dict[str, float] | None = None):
        self.score = score
        self.spread = spread
        self.baselines = baselines if baselines is not None else {"cudnn": 10.0}
        self.calls: list[dict[str, Any]] = []

    def _score_of(self, path: str | Path) -> Optional[float]:
        from avo import package

        source = package.entry_source(Path(path).read_text())
        if "raise_compile_error" in source:
            return None
        return float(self.score(parse_knobs(source).values))

    def __call__(self, kernel: str | Path, suite: Any = None, *, incumbent: str | Path | None = None,
                 stages=None, timeout: float | None = None, **_: Any) -> EvalResult:
        self.calls.append({"kernel": str(kernel), "incumbent": str(incumbent) if incumbent else None,
                           "stages": tuple(stages or ()), "source": Path(kernel).read_text()})
        score = self._score_of(kernel)
        if score is None:
            return EvalResult(status=COMPILE_ERROR, stage="compile", message="SyntaxError: fake failure",
                              suite="fake", device="fake")
        shape = ShapeResult(label="fake", shape={}, tflops=score, time_ms=1.0 / score, spread=self.spread,
                            baselines=dict(self.baselines), error=1e-4)  # re-verified, as the real one
        result = EvalResult(status=OK, suite="fake", device="fake", shapes=[shape], score=score,
                            baseline_scores=dict(self.baselines),
                            speedups={k: score / v for k, v in self.baselines.items()})
        if incumbent is not None:
            result.incumbent_ratio = score / self._score_of(incumbent)
            result.incumbent_ratio_spread = self.spread
            shape.incumbent_ratio, shape.incumbent_ratio_spread = result.incumbent_ratio, self.spread
        return result
