"""Compile → correctness → benchmark → re-verify, the candidate judged from outside its process.

    from avo.evaluate import evaluate
    result = evaluate("kernel.py", "mha", device="cuda", settings=cfg.evaluator,
                      incumbent="best.py", baselines=("cudnn", "fa3", "fa4"))

or `python -m avo.evaluate kernel.py --suite mha --json out.json`. The trust boundary is the layout:
- api.py (the search's process, no torch) starts the judge and keeps a backstop deadline;
- judge/ (trusted, our code only): owns the secret-seeded inputs and private copies of them, the
  fp32 reference, the tolerance, the comparison, its clock, the verdict; it starts one worker per
  kernel (candidate, incumbent, each baseline) in a sandbox (sandbox.py: bubblewrap or process
  isolation, allow-listed environment, every process killed at the end) and lends each a shared
  buffer of its own (judge/arena.py);
- worker/ (untrusted): imports one kernel and calls it when told; whatever it reports, the judge
  checks against the outputs in its own memory, the inputs it keeps, and its own clock.
Stages: compile = import + first call on a small shape; correctness = every smoke shape plus an
off-tile shape per suite class, in three call forms (a non-default softmax_scale with a NaN-filled
out=, a sharp softmax, the plain call); benchmark = warm-up, then repeats interleaved (candidate,
incumbent, baselines; order alternating), L2 flushed by the judge, inputs rotated and renewed,
every output snapshotted and a random subset verified after the fact, inputs checked unchanged;
reverify = fresh inputs on every suite shape after timing. See knowledge/evaluator.md.
"""

from avo.evaluate.api import EvaluatorError, UsageError, evaluate
from avo.evaluate.plan import BASELINES, STAGES
from avo.evaluate.result import (COMPILE_ERROR, CRASH, IMPORT_ERROR, INCORRECT, OK, STATUSES, TIMEOUT,
                                 EvalResult, ShapeResult, geomean)

__all__ = [
    "evaluate", "EvalResult", "ShapeResult", "geomean", "UsageError", "EvaluatorError",
    "STAGES", "BASELINES", "STATUSES", "OK", "IMPORT_ERROR", "COMPILE_ERROR", "INCORRECT", "TIMEOUT", "CRASH",
]
