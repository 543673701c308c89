"""How often does the acceptance rule accept a kernel over itself? (P1-f: at most 1 %.)

    python bench/self_confirm.py KERNEL.py --suite smoke --device cpu -n 200 --json out.json

Each trial is one full confirmation evaluation (candidate = incumbent = the same file, fresh
secret inputs, every stage), judged by avo.search.acceptance.confirm with the search's default
min_gain. A trial that is not `ok` counts as an error, never as a rejection. Progress on stderr;
the JSON holds every trial's ratio and margin, so the count can be checked.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from avo.config import EvaluatorConfig, SearchConfig
from avo.evaluate import evaluate
from avo.search.acceptance import confirm


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("kernel")
    p.add_argument("--suite", default="smoke")
    p.add_argument("--device", default="cpu")
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--repeats", type=int)
    p.add_argument("--warmup-ms", type=float)
    p.add_argument("--json", required=True)
    p.add_argument("--budget-s", type=float, help="start no trial after this many seconds (the JSON holds what ran)")
    p.add_argument("--release", choices=("flag", "spin"), help="evaluator.gpu_release")
    args = p.parse_args()
    settings = EvaluatorConfig()
    if args.repeats:
        settings.repeats = args.repeats
    if args.warmup_ms is not None:
        settings.warmup_ms = args.warmup_ms
    if args.release:
        settings.gpu_release = args.release
    min_gain = SearchConfig().min_gain
    trials = []
    t0 = time.time()
    for i in range(args.n):
        if args.budget_s is not None and time.time() - t0 >= args.budget_s:
            print(f"budget of {args.budget_s:g} s spent after {i} trials", file=sys.stderr)
            break
        r = evaluate(args.kernel, args.suite, device=args.device, settings=settings, incumbent=args.kernel)
        v = confirm(r, min_gain)
        trials.append({"status": r.status, "ratio": r.incumbent_ratio, "margin": r.incumbent_ratio_spread,
                       "accepted": v.accepted, "label": v.label, "wall_s": r.wall_s,
                       "message": r.message[:300] if r.status != "ok" else "",
                       # why a trial measured no ratio (an incumbent dropped, say): kept, not lost
                       "incumbent_status": getattr(r, "incumbent_status", None), "notes": r.notes[:10]})
        ok = [t for t in trials if t["status"] == "ok"]
        print(f"[{i + 1}/{args.n}] {r.status} ratio {r.incumbent_ratio} margin {r.incumbent_ratio_spread} "
              f"accepted {sum(t['accepted'] for t in trials)}/{len(ok)} ({time.time() - t0:.0f} s)",
              file=sys.stderr, flush=True)
        Path(args.json).write_text(json.dumps(_summary(args, trials, min_gain, r.env), indent=1) + "\n")
    s = _summary(args, trials, min_gain, {})
    print(f"{s['accepted']} of {s['ok']} self-confirmations accepted ({s['errors']} errors); "
          f"median ratio {s['median_ratio']}, median margin {s['median_margin']}")
    return 0


def _summary(args, trials, min_gain, env):
    ok = [t for t in trials if t["status"] == "ok"]
    return {
        "kernel": args.kernel, "suite": args.suite, "device": args.device, "min_gain": min_gain,
        "repeats": args.repeats, "warmup_ms": args.warmup_ms, "release": args.release,
        "trials": len(trials), "ok": len(ok), "errors": len(trials) - len(ok),
        "accepted": sum(t["accepted"] for t in ok),
        "median_ratio": statistics.median(x) if (x := [t["ratio"] for t in ok if t["ratio"] is not None]) else None,
        "median_margin": statistics.median(m) if (m := [t["margin"] for t in ok if t["margin"] is not None]) else None,
        "no_ratio": sum(t["ratio"] is None for t in ok),
        "env": {k: env.get(k) for k in ("gpu", "driver", "torch", "cudnn", "hostname") if k in env},
        "results": trials,
    }


if __name__ == "__main__":
    sys.exit(main())
