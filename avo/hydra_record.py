"""The run dir's `.hydra/` describes the run, not the last command typed in it.

Hydra writes `.hydra/` for every start before avo can look, so a refused resume or a dry run
pointed at an existing run would leave the run described by settings that never ran.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# The .hydra/ of the last start that was let run.
KEPT_HYDRA = ".hydra-run"


def keep_hydra(run_dir: str | Path) -> None:
    src, dest = Path(run_dir) / ".hydra", Path(run_dir) / KEPT_HYDRA
    if not src.is_dir():
        return
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


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
