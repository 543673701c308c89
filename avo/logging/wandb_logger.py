"""Weights & Biases: offline by default (files in the run dir, no account, no network).

The W&B run id is kept in the run dir, so a resumed search logs into the same W&B run. Logged:
the resolved config, per-iteration metrics (numbers only), the lineage as a table, and every
lineage version's kernel as an artifact of type "kernel" (aliases v<N> and best).
"""

from __future__ import annotations

import os
import re
import secrets
import string
from pathlib import Path
from typing import Any

from avo import package
from avo.config import ConfigError

ID_FILE = "wandb_id"


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def run_id(run_dir: Path) -> str:
    path = run_dir / ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    new = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new + "\n")
    os.replace(tmp, path)
    return new


class WandbLogger:
    def __init__(self, run_dir: str | Path, logger_cfg: Any, name: str):
        self.run_dir = Path(run_dir)
        self.cfg = logger_cfg
        self.name = name
        self.run = None
        if logger_cfg.mode == "online" and not _has_credentials():
            raise ConfigError("logger.mode=online needs W&B credentials (WANDB_API_KEY or `wandb login`); "
                              "or log offline with logger.mode=offline")

    def start(self, config, info) -> None:
        os.environ.setdefault("WANDB_SILENT", "true")
        if self.cfg.mode == "offline":
            os.environ["WANDB_MODE"] = "offline"
        import wandb

        self.run = wandb.init(
            dir=str(self.run_dir), mode=self.cfg.mode, project=self.cfg.project, entity=self.cfg.entity,
            tags=list(self.cfg.tags or []), id=run_id(self.run_dir), resume="allow",
            name=f"{self.name}-{self.run_dir.name}", config=config, job_type="search",
            settings=wandb.Settings(console="off", silent=True))
        self.run.summary.update({"run_dir": str(self.run_dir)})

    def iteration(self, metrics) -> None:
        numbers = {k: int(v) if isinstance(v, bool) else v for k, v in metrics.items()
                   if isinstance(v, (int, float))}
        self.run.log(numbers, step=int(metrics["iteration"]))

    def version(self, version, kernel_path) -> None:
        import wandb

        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name) or "avo"
        art = wandb.Artifact(f"{base}-kernel", type="kernel", metadata=dict(version))
        text = Path(kernel_path).read_text()
        pkg = package.parse(text)
        if pkg.single:
            art.add_file(str(kernel_path), name="kernel.py")
        else:  # a package: every file under its own name
            for rel, body in sorted(pkg.files.items()):
                with art.new_file(rel, mode="w") as f:
                    f.write(body)
        self.run.log_artifact(art, aliases=[f"v{version['version']}", "best"])

    def lineage(self, rows, step) -> None:
        import wandb

        if not rows:
            return
        columns = list(rows[0])
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        self.run.log({"lineage": table}, step=int(step))

    def message(self, text) -> None:
        pass

    def finish(self, summary) -> None:
        if self.run is not None:
            self.run.summary.update({k: v for k, v in summary.items() if v is not None})
            self.run.finish()
            self.run = None
