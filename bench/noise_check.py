"""Does the reported noise cover run-to-run variation? (P1-f)

    python bench/noise_check.py run1.json run2.json run3.json [--json out.json]

For every baseline, each run's suite speedup must lie inside every other run's reported interval
(speedup ± speedup_noise, two standard errors). Prints one line per baseline and pair; exits 1 when
any pair falls outside. Also reports the spread of the speedups against the median reported noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from itertools import permutations
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--json")
    args = p.parse_args()
    runs = [json.loads(Path(f).read_text()) for f in args.runs]
    names = sorted({n for r in runs for n in (r.get("speedups") or {})})
    report, bad = {}, 0
    for name in names:
        pts = [(r["speedups"].get(name), (r.get("speedup_noise") or {}).get(name)) for r in runs]
        if any(s is None or n is None for s, n in pts):
            print(f"{name}: a run has no speedup or noise ({pts})")
            continue
        pairs = []
        for (i, (si, ni)), (j, (sj, _)) in permutations(enumerate(pts), 2):
            inside = si - ni <= sj <= si + ni
            bad += not inside
            pairs.append({"interval_of": i, "speedup_of": j, "inside": inside})
        speeds = [s for s, _ in pts]
        report[name] = {"speedups": speeds, "noise": [n for _, n in pts], "pairs": pairs,
                        "range": max(speeds) - min(speeds), "median_noise": statistics.median(n for _, n in pts)}
        print(f"{name}: speedups {', '.join(f'{s:.4f}±{n:.4f}' for s, n in pts)}; range {report[name]['range']:.4f} "
              f"vs median ±{report[name]['median_noise']:.4f}; "
              f"{sum(p['inside'] for p in pairs)}/{len(pairs)} pairs inside")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
