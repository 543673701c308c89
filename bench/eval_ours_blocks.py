"""Our sm90 kernel against itself on two short mha shapes, printing what the judge's block timing
saw (per-call reported/time/wall and the row's overhead_ms): the check that an honest kernel's
blocks agree with the judge's clock. GPU only.

    python bench/eval_ours_blocks.py
"""
import json, os, sys
from dataclasses import asdict
from avo.config import EvaluatorConfig
from avo.evaluate import evaluate
from avo.suites import Shape
K = "kernels/cute_dsl/sm90/fmha_fwd.py"
for shape in [Shape(32, 1024, 16, 16, 128, False), Shape(4, 2048, 16, 16, 128, False)]:
    r = evaluate(K, [shape], device="cuda", settings=EvaluatorConfig(warmup_ms=300, repeats=10), incumbent=K)
    print(shape, r.status, r.message[:300])
    for s in r.shapes:
        print(" rep", s.reported_ms, "time", s.time_ms, "wall", s.wall_ms, json.dumps(s.overhead_ms)[:600])
