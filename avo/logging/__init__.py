"""Run logging: local JSONL metrics (always), rich console progress, W&B (unless logger=none)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avo.logging.base import Logger, MultiLogger, NullLogger
from avo.logging.console import ConsoleLogger
from avo.logging.jsonl import JsonlLogger


def build_logger(cfg: Any, run_dir: str | Path, console: bool = True) -> MultiLogger:
    loggers: list[Any] = [JsonlLogger(run_dir)]
    if console:
        loggers.append(ConsoleLogger(log_file=Path(run_dir) / "console.log"))
    if cfg.logger.kind == "wandb" and cfg.logger.mode != "disabled":
        from avo.logging.wandb_logger import WandbLogger

        loggers.append(WandbLogger(run_dir, cfg.logger, cfg.name))
    return MultiLogger(loggers)


__all__ = ["Logger", "MultiLogger", "NullLogger", "build_logger"]
