"""The offline report: one self-contained HTML file (charts embedded as base64 PNG, no scripts)."""

from __future__ import annotations

import base64
import os
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from avo.report import plots
from avo.report.data import Run, best_run

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 8px 0; } img { max-width: 100%; } figcaption, .note { color: #666; font-size: 13px; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _num(x: Optional[float], fmt: str = "{:.4g}") -> str:
    return "–" if x is None else fmt.format(x)


def _pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:+.1%}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{escape(str(c))}</td>' if i in numeric else f"<td>{escape(str(c))}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt, quote=True)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _chart(make: Callable[[], bytes], alt: str, caption: str) -> str:
    """A chart, or one line saying why it could not be drawn (the rest of the page still renders)."""
    try:
        return _figure(make(), alt, caption)
    except Exception as exc:  # a chart is never worth losing the whole report over
        return f'<p class="note">{escape(alt)}: not drawn ({escape(type(exc).__name__)}: {escape(str(exc))})</p>'


def _root(runs: Sequence[Run]) -> Path:
    """The deepest folder holding every run (the sweep dir for one sweep)."""
    paths = [str(r.path.resolve()) for r in runs]
    return Path(os.path.commonpath(paths)) if len(paths) > 1 else runs[0].path.resolve().parent


def runs_table(runs: Sequence[Run]) -> str:
    baselines = list(dict.fromkeys(b for r in runs for b in r.baselines()))
    root = _root(runs)
    header = ["run", "dir", "experiment", "iterations", "accepted", "best score", "vs seed",
              *[f"vs {b}" for b in baselines], "cost (USD)", "wall (min)", "W&B id"]
    rows = []
    for r in runs:
        speed = (r.best.speedups or {}) if r.best else {}
        rows.append([r.label, os.path.relpath(r.path.resolve(), root), r.get("name", ""), len(r.candidates),
                     sum(c.accepted for c in r.candidates), _num(r.best_score), _pct(r.gain_vs_seed),
                     *[_num(speed.get(b), "×{:.3f}") if speed.get(b) is not None else "–" for b in baselines],
                     f"{r.cost_usd:.2f}", _num((r.wall_s or 0) / 60, "{:.1f}"), r.wandb_id or "–"])
    numeric = [3, 4, 5, 6, *range(7, 7 + len(baselines) + 2)]
    return _table(header, rows, numeric)


def shapes_table(runs: Sequence[Run]) -> str:
    """TFLOP/s per shape: each run's best, then each baseline (median of its measurements)."""
    labels = list(dict.fromkeys(row["label"] for r in runs if r.best for row in (r.best.metrics or [])))
    baselines = list(dict.fromkeys(b for r in runs for b in r.baselines()))
    rows = []
    for r in runs:
        got = {row["label"]: row for row in ((r.best.metrics or []) if r.best else [])}
        rows.append([f"{r.label} (best v{r.best.version if r.best else '-'})",
                     *[_num(got.get(lbl, {}).get("tflops")) for lbl in labels]])
    for b in baselines:
        cells = []
        for lbl in labels:
            seen = sorted(row["baselines"][b] for r in runs if r.best for row in (r.best.metrics or [])
                          if row["label"] == lbl and (row.get("baselines") or {}).get(b))
            cells.append(_num(seen[len(seen) // 2] if seen else None))
        rows.append([f"{b} (baseline)", *cells])
    return _table(["TFLOP/s", *labels], rows, numeric=range(1, len(labels) + 1))


def lineage_table(run: Run) -> str:
    """The best run's lineage: each accepted version, why it was made, what it gained."""
    seed = run.seed.score if run.seed else None
    commits = {v.candidate: v for v in run.lineage}
    baselines = run.baselines()
    header = ["version", "candidate", "commit", "score", "vs seed", "vs previous",
              *[f"vs {b}" for b in baselines], "rationale"]
    rows, prev = [], None
    for v in run.versions:
        commit = commits.get(v.candidate)
        rationale = (commit.rationale if commit else None) or v.rationale or ""
        rows.append([f"v{v.version}", v.candidate, v.sha[:10], _num(v.score),
                     _pct(v.score / seed - 1 if v.score and seed else None),
                     _pct(v.score / prev - 1 if v.score and prev else None),
                     *[_num((v.speedups or {}).get(b), "×{:.3f}") for b in baselines],
                     rationale.strip().splitlines()[0][:200] if rationale.strip() else ""])
        prev = v.score
    return _table(header, rows, numeric=[1, 3, 4, 5, *range(6, 6 + len(baselines))])


def render(runs: Sequence[Run], keys: Sequence[str], sources: Sequence[str], title: str = "avo report") -> str:
    best = best_run(runs)
    baselines = list(dict.fromkeys(b for r in runs for b in r.baselines()))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="note">{len(runs)} run(s) from {escape(", ".join(sources))} (dirs below relative to '
        f'{escape(str(_root(runs)))}); made {when}.</p>',
        "<h2>Runs</h2>",
        "<p>" + ("Config keys that differ between the runs (the labels below): " +
                 ", ".join(f"<code>{escape(k)}</code>" for k in keys) if keys else
                 "The runs share one configuration.") + "</p>",
        runs_table(runs),
        "<h2>Best score over iterations</h2>",
        _chart(lambda: plots.best_over(runs, "iteration"), "best score over iterations",
               "Score of the incumbent (the latest lineage version) after each iteration; one colour per "
               "group of runs that share all settings but the seed."),
        "<h2>Best score over wall time</h2>",
        _chart(lambda: plots.best_over(runs, "time"), "best score over wall time",
               "The same over wall-clock time, summed across resumes."),
        *(["<h2>Speedup over each baseline over iterations</h2>",
           _chart(lambda: plots.speedup_over(runs, baselines), "speedup over baselines",
                  "The incumbent's suite speedup (median of paired per-shape ratios, geomean) after each "
                  "iteration; 1 = as fast as the baseline.")] if baselines else []),
        "<h2>Per-shape TFLOP/s of each run's best version</h2>",
        _chart(lambda: plots.per_shape(runs), "per-shape TFLOP/s",
               "Hatched: baselines timed in the same process as the best version (median over runs)."),
        shapes_table(runs),
        "<h2>Candidates: accepted and failure statuses</h2>",
        _chart(lambda: plots.outcomes(runs), "candidate outcomes",
               "Accepted; correct but not accepted (slower, not-confirmed, duplicate); or the evaluator "
               "status that stopped it (compile_error, incorrect, timeout, crash, ...)."),
        "<h2>Cost</h2>",
        _chart(lambda: plots.cost(runs), "cost", "LLM spend and tokens as the operator reported them; wall time."),
    ]
    if best is not None:
        origin = best.meta.get("seed_origin") or ""
        # a package (kernel.avopkg) exports as a directory of its files
        out = "kernel/" if str(best.best_kernel or "").endswith(".avopkg") else "kernel.py"
        parts += [f"<h2>Lineage of the best run: {escape(best.label)}</h2>",
                  f'<p class="note">{escape(str(best.path))}; seed: {escape(str(origin))}</p>',
                  f'<p>Best kernel: <code>{escape(str(best.best_kernel))}</code> (v{best.best.version}; '
                  f'<code>python -m avo.runs export {escape(str(best.path))} {out}</code> copies it)</p>',
                  lineage_table(best)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write(path: str | Path, runs: Sequence[Run], keys: Sequence[str], sources: Sequence[str],
          title: str = "avo report") -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(runs, keys, sources, title), encoding="utf-8")
    return out
