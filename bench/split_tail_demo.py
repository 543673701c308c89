"""The split-tail attack (tests/hostile/r_gpu_split_tail.py) against whichever evaluator `avo`
imports: a block's deferred share of heads left running behind the "done" word and the reply,
timed against its honest twin (kernels/reference/sdpa.py) on the hostile GPU tests' shape.

    python bench/split_tail_demo.py --json out.json 0.25 0.0625
    PYTHONPATH=.old:$PYTHONPATH python bench/split_tail_demo.py ...   # an older evaluator
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import avo
from avo.config import EvaluatorConfig
from avo.evaluate import evaluate
from avo.suites import Shape

ROOT = Path(__file__).resolve().parents[1]
SHAPE = Shape(4, 2048, 16, 16, 128, False)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("tails", nargs="+", type=float)
    p.add_argument("--json", required=True)
    args = p.parse_args()
    print(f"avo from {Path(avo.__file__).parent}", flush=True)
    settings = {**asdict(EvaluatorConfig()), "own_code_only": False}
    out = []
    src = (ROOT / "tests/hostile/r_gpu_split_tail.py").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        for tail in args.tails:
            k = Path(tmp) / f"split_{tail}.py"
            k.write_text(src.replace("@@TAIL@@", repr(tail)))
            r = evaluate(k, [SHAPE], device="cuda", settings=settings, incumbent=ROOT / "kernels/reference/sdpa.py")
            rows = [asdict(s) for s in r.shapes]
            out.append({"tail": tail, "avo": str(Path(avo.__file__).parent), "status": r.status,
                        "message": r.message, "incumbent_ratio": r.incumbent_ratio, "rows": rows})
            for s in rows:
                o = s.get("overhead_ms") or {}
                print(f"tail {tail}: {r.status} ratio over its honest twin {s.get('incumbent_ratio')} "
                      f"reported {s['reported_ms']:.4f} time {s['time_ms']:.4f} wall {s['wall_ms']:.4f} "
                      f"block {o.get('calls_per_block')} post {o.get('post')} idle {o.get('post_idle')} "
                      f"end {o.get('end')}", flush=True)
            if r.status != "ok":
                print(f"  message: {r.message[:300]}", flush=True)
            Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
