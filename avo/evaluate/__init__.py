"""Compile → correctness → benchmark → re-verify, each candidate in its own process.

    from avo.evaluate import evaluate
    result = evaluate("kernel.py", "mha", device="cuda", settings=cfg.evaluator,
                      incumbent="best.py", baselines=("cudnn", "fa2", "fa4"))

or `python -m avo.evaluate kernel.py --suite mha --json out.json`. How a verdict is reached:
- the child process (api.py → _child.py) runs in its own process group; each stage has its own
  limit; a hang is killed (`timeout`, with the stack where it hung), a death is `crash`;
- compile = import + the first call on a small shape of the suite's first class;
- correctness = every smoke shape plus an off-tile shape per class of the suite, two fresh
  random inputs each (one with a sharp softmax; one through `out=` when the kernel takes it,
  NaN-filled), relative Frobenius error against a float32 (GPU) / float64 (CPU) reference;
- benchmark = warm-up until the clock settles, then median of repeats timed by CUDA events with
  L2 flushed and inputs rotated and refreshed in place, interleaved with the incumbent; the timed
  outputs are checked, and a back-to-back wall clock cross-checks the events;
- reverify = fresh inputs on every suite shape after timing (sampled query rows on big shapes).
On a CPU the child uses one torch thread (steady timings on small shared machines) and caps the
warm-up at 250 ms (no clocks to wait for). Baselines are timed on CUDA only.
Not a security sandbox: a kernel that deliberately patches the evaluator in its own process can
still fool it. The checks target wrong kernels, partial writes, and results cached or skipped.
"""

from avo.evaluate.api import EvaluatorError, UsageError, evaluate
from avo.evaluate.plan import BASELINES, STAGES
from avo.evaluate.result import (COMPILE_ERROR, CRASH, IMPORT_ERROR, INCORRECT, OK, STATUSES, TIMEOUT,
                                 EvalResult, ShapeResult, geomean)

__all__ = [
    "evaluate", "EvalResult", "ShapeResult", "geomean", "UsageError", "EvaluatorError",
    "STAGES", "BASELINES", "STATUSES", "OK", "IMPORT_ERROR", "COMPILE_ERROR", "INCORRECT", "TIMEOUT", "CRASH",
]
