"""Why a clock-shaving kernel passes or fails the judge's clock check on a GPU: evaluates
tests/hostile/r_gpu_clock_shave.py at each factor (1.0 = honest) on the hostile GPU tests' timed
shape and prints, per evaluation, the verdict and what the check compares.

    python bench/clock_diag.py --json out.json 1.0 0.85 0.5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from avo.config import EvaluatorConfig
from avo.evaluate import evaluate
from avo.evaluate.judge.judge import CLOCK_FLOOR, GAP_SLACK
from avo.suites import Shape

ROOT = Path(__file__).resolve().parents[1]
SHAPE = Shape(4, 2048, 16, 16, 128, False)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("factors", nargs="+", type=float)
    p.add_argument("--json", required=True)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    settings = {**asdict(EvaluatorConfig(warmup_ms=300, repeats=10, rotate_inputs=2)), "own_code_only": False}
    out = []
    src = (ROOT / "tests/hostile/r_gpu_clock_shave.py").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        for f in args.factors:
            k = Path(tmp) / f"shave_{f}.py"
            k.write_text(src.replace("@@FACTOR@@", repr(f)))
            r = evaluate(k, [SHAPE], device=args.device, settings=settings)
            rows = [asdict(s) for s in r.shapes]
            out.append({"factor": f, "status": r.status, "message": r.message, "notes": r.notes, "rows": rows})
            for s in rows:
                # The check works per timed sample (a block of n calls); the row's times are per call.
                o = s.get("overhead_ms") or {}
                n = o.get("calls_per_block") or 1
                blk = o.get("per_block") or {"median": o.get("median"), "high": o.get("high")}
                share, slack = CLOCK_FLOOR[args.device]
                est = (s["wall_ms"] or 0) * n - (blk.get("median") or 0) - GAP_SLACK[args.device]
                print(f"factor {f}: {r.status} per call: reported {s['reported_ms']:.4f} time {s['time_ms']:.4f} "
                      f"wall {s['wall_ms']:.4f}; block of {n}: reported {s['reported_ms'] * n:.4f} "
                      f"overhead {blk.get('median'):.4f}/{blk.get('high'):.4f} est {est:.4f} "
                      f"floor {share * est - slack:.4f}; end {o.get('end')}", flush=True)
            if r.status != "ok":
                print(f"  message: {r.message[:400]}", flush=True)
            Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
