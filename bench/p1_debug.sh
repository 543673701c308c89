#!/bin/bash
# One device call: the judge/worker evaluator on the GPU (bubblewrap), smoke + two mha shapes.
# carry: .device-carry .bwrap
source .device-carry/activate.sh
export PATH=$PWD/.bwrap:$PATH
K=kernels/cute_dsl/sm90/fmha_fwd.py
python3 -m avo.evaluate $K --suite smoke --incumbent $K --baselines cudnn,fa4 --repeats 10 --warmup-ms 300 --json $OUT/smoke.json 2>&1 | tail -8
python3 - <<'PY'
import json, os
from avo.evaluate import evaluate
from avo.config import EvaluatorConfig
from avo.suites import load
shapes = [s for s in load("mha") if s.seqlen in (1024, 16384) and not s.causal]
r = evaluate("kernels/cute_dsl/sm90/fmha_fwd.py", shapes, device="cuda", settings=EvaluatorConfig(repeats=20),
             incumbent="kernels/cute_dsl/sm90/fmha_fwd.py", baselines=("cudnn", "fa4"))
r.write(os.environ["OUT"] + "/mha2.json")
print(r.status, r.stage, r.message[:600], r.notes, r.wall_s)
for s in r.shapes:
    print(s.label, round(s.time_ms, 4), round(s.reported_ms or 0, 4), round(s.wall_ms, 4), s.incumbent_ratio, s.baseline_ratios, s.overhead_ms)
PY
