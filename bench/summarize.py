"""Collect evaluator JSON records (a directory or files) into one markdown table.

    python bench/summarize.py OUTDIR            # every *.json in it
    python bench/summarize.py a.json b.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(x, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _base(row: dict, name: str) -> str:
    """Baseline TFLOP/s, with our interleaved per-shape speedup over it where recorded."""
    ratio = (row.get("baseline_ratios") or {}).get(name)
    return _f((row.get("baselines") or {}).get(name)) + (f" ({ratio:.3f}x)" if ratio is not None else "")


def table(records: list[tuple[str, dict]]) -> str:
    names = list(dict.fromkeys(n for _, r in records for s in r.get("shapes", []) for n in s.get("baselines", {})))
    head = ["kernel", "status", "shape", "TFLOP/s", "spread"] + names + ["vs incumbent"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in records:
        if not r.get("shapes"):
            msg = (r.get("message") or "").splitlines()[0][:80] if r.get("message") else ""
            lines.append(f"| {name} | {r['status']} ({r.get('stage')}) | {msg} |" + " |" * (len(head) - 3))
            continue
        for s in r["shapes"]:
            ratio = (f"{s['incumbent_ratio']:.3f} ±{s['incumbent_ratio_spread']:.3f}"
                     if s.get("incumbent_ratio") is not None else "-")
            cells = [name, r["status"], s["label"], _f(s.get("tflops")), _f(s.get("spread"), "{:.1%}")]
            cells += [_base(s, n) for n in names] + [ratio]
            lines.append("| " + " | ".join(cells) + " |")
        speed = ", ".join(f"x{v:.3f} vs {k}" for k, v in r.get("speedups", {}).items() if v is not None)
        inc = f", x{r['incumbent_ratio']:.3f} vs incumbent" if r.get("incumbent_ratio") else ""
        lines.append(f"| {name} | **score** | geomean | {_f(r.get('score'))} | | " + " | " * len(names)
                     + f"{speed}{inc} |")
    env = next((r.get("env", {}) for _, r in records if r.get("env")), {})
    foot = ", ".join(f"{k} {env[k]}" for k in ("gpu", "driver", "torch", "cudnn", "cutlass_dsl", "flash_attn_4")
                     if env.get(k) is not None)
    return "\n".join(lines) + (f"\n\n{foot}\n" if foot else "\n")


def main(argv: list[str]) -> int:
    paths: list[Path] = []
    for a in argv or ["."]:
        p = Path(a)
        paths += sorted(p.glob("*.json")) if p.is_dir() else [p]
    records = []
    for p in paths:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            print(f"skipping {p}: {exc}", file=sys.stderr)
            continue
        if isinstance(data, dict) and "status" in data:
            records.append((p.stem, data))
    if not records:
        print("no evaluator records found", file=sys.stderr)
        return 1
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
