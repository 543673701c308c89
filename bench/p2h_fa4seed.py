"""P2-h on the H200: FA4's own SM90 forward copied into a seed package (hardware=h200_fa4seed) passes
the evaluator, and its speed is within 2 % of the installed FA4 timed interleaved with it (the `fa4`
baseline's ratio), on the `mha` suite. Writes the package's origin and the evaluator's JSON.

    python3 bench/p2h_fa4seed.py --json OUT.json [--suite mha] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avo import package  # noqa: E402
from avo.config import EvaluatorConfig  # noqa: E402
from avo.evaluate import evaluate  # noqa: E402
from avo.search.seed import from_sources  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--json", required=True)
    p.add_argument("--suite", default="mha")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--dir", default="/tmp/avo-fa4seed")
    a = p.parse_args()
    hw = OmegaConf.load(ROOT / "conf/hardware/h200_fa4seed.yaml")
    t0 = time.time()
    seed = from_sources(hw.seed_kernel, hw.seed_source)
    pkg = package.parse(seed.source)
    root = pkg.write(Path(a.dir)).parent
    print(f"seed package: {len(pkg.files)} files, {sum(len(t) for t in pkg.files.values())} chars ({time.time() - t0:.1f} s)")
    print(seed.origin)
    r = evaluate(root, a.suite, device="cuda", settings=EvaluatorConfig(repeats=a.repeats), baselines=("fa4", "cudnn"),
                 progress=lambda stage, shape: print(f"  {stage} {shape or ''}", flush=True))
    doc = {"seed_origin": seed.origin, "trailers": seed.trailers, "files": sorted(pkg.files), "result": r.to_dict()}
    Path(a.json).write_text(json.dumps(doc, indent=1, default=str))
    print(f"status {r.status} own_code {r.own_code} score {r.score}")
    for s in r.shapes:
        ratios = s.baseline_ratios or {}
        print(f"{s.label:34s} {s.tflops or 0:8.1f} TFLOP/s  x fa4 {ratios.get('fa4', float('nan')):.4f}"
              f"  x cudnn {ratios.get('cudnn', float('nan')):.4f}")
    print("suite speedups", r.speedups, "noise", getattr(r, "speedup_noise", None))
    fa4 = (r.speedups or {}).get("fa4")
    verdict = "PASS" if r.status == "ok" and fa4 is not None and abs(fa4 - 1) <= 0.02 else "FAIL"
    print(f"{verdict}: the copied FA4 seed at x{fa4} of the installed FA4 (within 2 % needed)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
