"""Hydra callbacks of a multirun (`python -m avo -m ...`), in the submitting process.

- Before anything is submitted: the composed config is checked (avo.config.validate) and the
  model's key looked up on this host, so a mistake is one line here, not a traceback on a node
  after queueing. Values swept per job (model=a,b) are checked by each job again.
- After every job has ended: one line per job (best score, accepted of iterations, run dir) and
  the command for the report.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from avo.archive import FILENAME, DamagedArchive, open_run
from avo.errors import fail


class SweepChecks(Callback):
    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from avo import config as avo_config
        from avo.__main__ import check_credentials

        try:
            avo_config.validate(config)
            if not config.get("dry_run"):
                check_credentials(config)
        except avo_config.ConfigError as exc:
            fail(f"{exc} (nothing was submitted)")


def summary(sweep_dir: Path) -> list[str]:
    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        if not (job / FILENAME).is_file():
            rows.append(f"{job.name:>4s}  {'-':>10s}  {'-':>9s}  {job}  (no archive: the job did not start a search)")
            continue
        try:
            with open_run(job) as arch:
                best, totals, n = arch.best(), arch.totals(), arch.count()
        except DamagedArchive as exc:
            rows.append(f"{job.name:>4s}  {'-':>10s}  {'-':>9s}  {job}  ({exc})")
            continue
        score = f"{best.score:.4g}" if best is not None and best.score is not None else "-"
        rows.append(f"{job.name:>4s}  {score:>10s}  {totals['accepted']:>3d} of {n:<3d}  {job}")
    return rows


def _untouched(sweep_dir: Path) -> bool:
    """Nothing in it but Hydra's multirun.yaml, launcher logs and job dirs a dry run emptied."""
    for p in sweep_dir.iterdir():
        if p.name in ("multirun.yaml", ".submitit") or p.suffix == ".log":
            continue
        if p.is_dir() and p.name.isdigit() and all(q.name == ".hydra" or q.suffix == ".log" for q in p.iterdir()):
            continue
        return False
    return True


def remove_dry_sweep(sweep_dir: Path) -> None:
    """A dry multirun plans and leaves nothing behind: its sweep dir, and the folders Hydra made
    above it (multirun/<name>/) where empty now, never the cwd or anything outside it."""
    if not sweep_dir.is_dir() or not _untouched(sweep_dir):
        return
    # A launcher's jobs (submitit) printed their plans into its logs: shown here, then gone.
    for out in sorted(sweep_dir.glob(".submitit/*/*_log.out")):
        plan = [ln for ln in out.read_text(errors="replace").splitlines() if not re.match(r"(submitit |\[\d{4}-)", ln)]
        if plan:
            print("\n".join(plan) + "\n")
    shutil.rmtree(sweep_dir, ignore_errors=True)
    cwd, up = Path.cwd().resolve(), sweep_dir.resolve().parent
    while up != cwd and cwd in up.parents:
        try:
            up.rmdir()  # only an empty one
        except OSError:
            break
        up = up.parent


class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if config.get("dry_run"):
            remove_dry_sweep(sweep_dir)
        if not sweep_dir.is_dir():
            return
        rows = summary(sweep_dir)
        if not rows:
            return
        print(f"\n{'job':>4s}  {'best':>10s}  {'accepted':>9s}  run dir  (best: TFLOP/s, geometric mean)")
        print("\n".join(rows))
        print(f"report: python -m avo.report {sweep_dir}")
