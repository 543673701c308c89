"""`python -m avo.evaluate KERNEL.py --suite smoke --device cpu --json OUT.json`

Exit status: 0 when the kernel passed every stage asked for, 1 when it failed one (the JSON and
the printout say which and why), 2 for a usage mistake (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from avo.config import EvaluatorConfig
from avo.errors import fail
from avo.evaluate.api import EvaluatorError, UsageError, evaluate
from avo.evaluate.plan import BASELINES, STAGES
from avo.evaluate.result import EvalResult


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        fail(f"{message} (see python -m avo.evaluate --help)")


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = _Parser(prog="python -m avo.evaluate", description=__doc__.strip().splitlines()[0])
    p.add_argument("kernel", help="kernel file exposing attention(q, k, v, causal, softmax_scale)")
    p.add_argument("--suite", default="smoke", help="suite name (conf/attention/*.yaml): smoke, mha, mha_d64, gqa")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--json", metavar="OUT.json", help="write the result record here")
    p.add_argument("--timeout", type=float, help="overall limit in seconds (per-stage limits apply anyway)")
    p.add_argument("--incumbent", metavar="OTHER.py", help="time interleaved against this kernel")
    p.add_argument("--baselines", type=_csv, default=[], help=f"comma list of {','.join(BASELINES)}")
    p.add_argument("--stages", type=_csv, default=list(STAGES), help=f"comma list of {','.join(STAGES)}")
    p.add_argument("--repeats", type=int, help="timed repeats per shape")
    p.add_argument("--warmup-ms", type=float, help="minimum warm-up per shape")
    p.add_argument("--sandbox", choices=("auto", "bubblewrap", "process"),
                   help="how the kernel's process is isolated (default auto: bubblewrap when it works here)")
    p.add_argument("--release", choices=("flag", "spin"),
                   help="GPU: how timed calls start (default flag: released by the judge; spin: the weaker fallback)")
    p.add_argument("--allow-library", action="store_true",
                   help="let a kernel that wraps a library attention run (its result says own_code false)")
    p.add_argument("--arch", help="recorded only (the GPU present decides what runs)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the status line")
    return p.parse_args(argv)


def table(result: EvalResult) -> None:
    from rich.console import Console
    from rich.table import Table

    names = list(dict.fromkeys(n for r in result.shapes for n in r.baselines))
    inc = any(r.incumbent_ratio is not None for r in result.shapes)
    t = Table(title=f"{result.suite} on {result.env.get('gpu') or result.device}", title_justify="left")
    t.add_column("shape")
    t.add_column("TFLOP/s", justify="right")
    t.add_column("spread", justify="right")
    for n in names:
        t.add_column(n, justify="right")
    if inc:
        t.add_column("vs incumbent", justify="right")

    def f(x, fmt="{:.1f}"):
        return "-" if x is None else fmt.format(x)

    small = result.device == "cpu"
    num = "{:.4f}" if small else "{:.1f}"
    for r in result.shapes:
        cells = [r.label, f(r.tflops, num), f(r.spread, "{:.1%}")] + [_base_cell(r, n, num) for n in names]
        if inc:
            cells.append(f"{f(r.incumbent_ratio, '{:.3f}')} ±{f(r.incumbent_ratio_spread, '{:.3f}')}")
        t.add_row(*cells)
    Console().print(t)


def _base_cell(row, name: str, num: str) -> str:
    """The baseline's TFLOP/s, and our interleaved speedup over it where measured."""
    tf = row.baselines.get(name)
    if tf is None:
        return "-"
    ratio = row.baseline_ratios.get(name)
    return num.format(tf) + (f" ({ratio:.3f}x)" if ratio is not None else "")


def summary(result: EvalResult) -> str:
    parts = [f"status {result.status}"]
    if result.stage:
        parts.append(f"stage {result.stage}")
    if result.compile_s is not None:
        parts.append(f"compile {result.compile_s:.1f} s")
    if result.score is not None:
        parts.append(f"score {result.score:.4g} TFLOP/s")
    for name, sp in result.speedups.items():
        if sp is not None:
            noise = result.speedup_noise.get(name)
            parts.append(f"x{sp:.3f} vs {name}" + (f" (±{noise:.3f})" if noise is not None else ""))
    if result.incumbent_ratio is not None:
        parts.append(f"x{result.incumbent_ratio:.3f} vs incumbent (spread {result.incumbent_ratio_spread:.3f})")
    return ", ".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    settings = EvaluatorConfig()
    if args.repeats is not None:
        settings.repeats = args.repeats
    if args.warmup_ms is not None:
        settings.warmup_ms = args.warmup_ms
    if args.sandbox is not None:
        settings.sandbox = args.sandbox
    if args.release is not None:
        settings.gpu_release = args.release
    try:
        result = evaluate(args.kernel, args.suite, device=args.device, settings=settings,
                          incumbent=args.incumbent, baselines=args.baselines, timeout=args.timeout,
                          stages=args.stages, allow_library=args.allow_library)
    except (UsageError, EvaluatorError) as exc:
        fail(str(exc))
    if args.arch:
        result.env["arch_requested"] = args.arch
    if args.json:
        result.write(args.json)
    if not args.quiet and result.shapes:
        table(result)
    print(summary(result))
    if result.message:
        print(result.message)
    for note in result.notes:
        print(f"note: {note}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
