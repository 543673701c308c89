"""The run dir's `.hydra/` describes the run, not the last command typed in it.

Hydra writes `.hydra/` for every start before avo can look, so a refused resume or a dry run
pointed at an existing run would leave the run described by settings that never ran.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

# The .hydra/ of the last start that was let run.
KEPT_HYDRA = ".hydra-run"


def snapshot(cfg: Any) -> Optional[dict[str, str]]:
    """This process's own `.hydra/` files, made from memory as Hydra makes them: a second start
    in the same run dir rewrites the files on disk while this one is still getting ready."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml({"hydra": hc}),
            "overrides.yaml": OmegaConf.to_yaml(hc.overrides.task)}


def keep_hydra(run_dir: str | Path, files: Optional[dict[str, str]] = None) -> None:
    """Record the start that was let run: its own files when given (`snapshot`), else `.hydra/`."""
    src, dest = Path(run_dir) / ".hydra", Path(run_dir) / KEPT_HYDRA
    if files is None and not src.is_dir():
        return
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if files is None:
        shutil.copytree(src, tmp)
    else:
        tmp.mkdir(parents=True)
        for name, text in files.items():
            (tmp / name).write_text(text)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    if files is not None:
        restore_hydra(run_dir)  # and .hydra/ says the same, whatever a refused start wrote there


def restore_hydra(run_dir: str | Path) -> bool:
    """After a refused start: .hydra/ back to the kept one (False where none was kept)."""
    kept, dest = Path(run_dir) / KEPT_HYDRA, Path(run_dir) / ".hydra"
    if not kept.is_dir():
        return False
    try:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(kept, dest)
    except OSError:
        return False
    return True
