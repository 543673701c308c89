"""The W&B report: the HTML report's panels as a W&B report (wandb-workspaces), over the W&B runs
of the given run dirs (their ids are in each run dir's `wandb_id`), grouped by the config keys
that differ. `build` makes the report object offline; `save` needs network and credentials.

Offline runs (the default) must be uploaded first: `wandb sync RUN_DIR/wandb/offline-run-*`.
The curves come from what the search logged to W&B (best/score, elapsed_s, count/<status>,
total/cost_usd, best/speedup_vs_<baseline>); the per-shape table and the lineage of the best run,
which W&B holds only as tables, are written into the report from the run dirs.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence
from urllib.parse import urlparse

from avo.report.data import ACCEPTED, Run, best_run, group_keys

STATUSES = ("ok", "compile_error", "import_error", "incorrect", "timeout", "crash", "duplicate", "operator_error")


def _wr():
    with warnings.catch_warnings():  # the package still uses pydantic-1 style validators
        warnings.simplefilter("ignore")
        import wandb_workspaces.reports.v2 as wr
        from wandb_workspaces import expr
    return wr, expr


def parse_target(target: str) -> tuple[str, str]:
    entity, sep, project = target.partition("/")
    if not sep or not entity or not project or "/" in project:
        raise ValueError(f"--wandb wants ENTITY/PROJECT, got {target!r}")
    return entity, project


def _md_num(x: Optional[float], fmt: str = "{:.4g}") -> str:
    return "–" if x is None else fmt.format(x)


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def shapes_markdown(runs: Sequence[Run]) -> str:
    labels = list(dict.fromkeys(row["label"] for r in runs if r.best for row in (r.best.metrics or [])))
    rows = []
    for r in runs:
        got = {row["label"]: row for row in ((r.best.metrics or []) if r.best else [])}
        rows.append([f"{r.label} (v{r.best.version})" if r.best else r.label,
                     *[_md_num(got.get(lbl, {}).get("tflops")) for lbl in labels]])
        for b in r.baselines():
            rows.append([f"↳ {b}", *[_md_num((got.get(lbl, {}).get("baselines") or {}).get(b)) for lbl in labels]])
    return _md_table(["TFLOP/s", *labels], rows)


def lineage_markdown(run: Run) -> str:
    seed = run.seed.score if run.seed else None
    commits = {v.candidate: v for v in run.lineage}
    baselines = run.baselines()
    rows = []
    for v in run.versions:
        commit = commits.get(v.candidate)
        why = ((commit.rationale if commit else None) or v.rationale or "").strip()
        rows.append([f"v{v.version}", v.candidate, v.sha[:10], _md_num(v.score),
                     f"{v.score / seed - 1:+.1%}" if v.score and seed else "–",
                     *[_md_num((v.speedups or {}).get(b), "×{:.3f}") for b in baselines],
                     why.splitlines()[0][:160] if why else ""])
    return _md_table(["version", "candidate", "commit", "score", "vs seed", *[f"vs {b}" for b in baselines],
                      "rationale"], rows)


def build(runs: Sequence[Run], keys: Sequence[str], entity: str, project: str,
          title: str = "avo report") -> Any:
    """The report object (nothing is sent anywhere)."""
    wr, expr = _wr()
    logged = [r for r in runs if r.wandb_id]
    if not logged:
        raise ValueError("none of these runs was logged to W&B (they ran with logger=none)")
    ids = [r.wandb_id for r in logged]
    grouping = [f"config.{k}" for k in group_keys(keys)]
    runset = wr.Runset(entity=entity, project=project, name="avo runs",
                       filters=expr.And(expr.Metric("ID").isin(ids)), groupby=grouping)
    agg = {"groupby_aggfunc": "mean", "groupby_rangefunc": "minmax"} if grouping else {}
    baselines = list(dict.fromkeys(b for r in runs for b in r.baselines()))
    statuses = list(dict.fromkeys(c.status for r in runs for c in r.candidates))
    statuses = [s for s in STATUSES if s in statuses] + [s for s in statuses if s not in STATUSES]

    def at(x: int, y: int, w: int, h: int):
        return wr.Layout(x=x, y=y, w=w, h=h)

    panels = [
        wr.LinePlot(title="Best score over iterations", x="Step", y=["best/score"], title_x="iteration",
                    title_y="best score (geomean TFLOP/s)", layout=at(0, 0, 12, 8), **agg),
        wr.LinePlot(title="Best score over wall time", x="elapsed_s", y=["best/score"],
                    title_x="wall time (s, across resumes)", title_y="best score (geomean TFLOP/s)",
                    layout=at(12, 0, 12, 8), **agg),
        wr.BarPlot(title="Best version vs baselines (suite geomean speedup)",
                   metrics=[f"best/speedup_vs_{b}" for b in baselines] or ["best/score"],
                   orientation="h", layout=at(0, 8, 8, 8)),
        wr.BarPlot(title="Candidates: accepted and failure statuses",
                   metrics=[f"count/{ACCEPTED}", *[f"count/{s}" for s in statuses]], orientation="h",
                   layout=at(8, 8, 8, 8)),
        wr.BarPlot(title="Cost", metrics=["total/cost_usd", "total/tokens"], orientation="h",
                   layout=at(16, 8, 8, 8)),
        wr.WeavePanelSummaryTable(table_name="lineage", layout=at(0, 16, 24, 10)),
    ]
    best = best_run(runs)
    differ = ", ".join(f"`{k}`" for k in keys) or "nothing (one configuration)"
    blocks = [
        wr.P(f"{len(runs)} avo run(s); the config keys that differ: {differ}. Runs are grouped by "
             f"{', '.join(f'`{g}`' for g in grouping) or 'nothing'}."),
        wr.PanelGrid(runsets=[runset], panels=panels),
        wr.H2("Per-shape TFLOP/s of each run's best version"),
        wr.MarkdownBlock(shapes_markdown(runs)),
    ]
    if best is not None:
        blocks += [wr.H2(f"Lineage of the best run: {best.label}"),
                   wr.P(f"{best.path} — seed: {best.meta.get('seed_origin') or '?'}"),
                   wr.MarkdownBlock(lineage_markdown(best))]
    missing = [r.label for r in runs if not r.wandb_id]
    if missing:
        blocks.append(wr.P("Not in W&B (logger=none): " + "; ".join(missing)))
    return wr.Report(entity=entity, project=project, title=title[:128],
                     description="Made by `python -m avo.report` from local run dirs.", blocks=blocks)


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def _reachable(url: str, timeout: float = 5.0) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "api.wandb.ai", parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def save(report: Any) -> str:
    """Upload the report; its URL. Raises RuntimeError with one line when that cannot work here."""
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    if not _has_credentials():
        raise RuntimeError("no W&B credentials: run `wandb login` or set WANDB_API_KEY")
    if not _reachable(base):
        raise RuntimeError(f"cannot reach {base} (no network?); the HTML report works offline: --html OUT.html")
    try:
        report.save()
        return report.url
    except Exception as exc:  # the API's errors are many and long; the first line says enough
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RuntimeError(f"W&B refused the report ({first}); were the offline runs synced "
                           "(`wandb sync RUN_DIR/wandb/offline-run-*`)?") from None
