"""User mistakes end in one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Iterator, NoReturn


class SearchStuck(Exception):
    """The latest iterations all failed the same way: a setup problem that more iterations would
    only repeat (they are recorded; the same command resumes once it is fixed)."""


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"avo: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def one_line(exc: BaseException) -> str:
    """Hydra/OmegaConf's multi-line messages reduced to what names the mistake."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = re.sub(r"^In '[^']+': ", "", first)
    parts = [first.rstrip(".")]
    options = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)+)", text)
    if options:
        parts.append("available: " + ", ".join(o.strip() for o in options.group(1).splitlines()))
    for line in text.splitlines()[1:]:
        if line.startswith(("Key ", "Value ")):
            parts.append(line.strip())
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        parts.append(str(cause).strip().splitlines()[0])
    return "; ".join(dict.fromkeys(p for p in parts if p))


@contextlib.contextmanager
def concise_hydra_errors() -> Iterator[None]:
    """Hydra prints its own (multi-line) report unless HYDRA_FULL_ERROR is set; we set it so the
    exception reaches us and becomes one line. A user who set it keeps the full trace."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if os.environ.get("HYDRA_FULL_ERROR"):
        yield
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except (HydraException, OmegaConfBaseException) as exc:
        fail(one_line(exc), code=1)
    except ValueError as exc:
        # Hydra's logging setup, before any of our code runs: its file handler in the run dir.
        if "Unable to configure handler" not in str(exc):
            raise
        cause = exc.__cause__ or exc.__context__
        why = f"{getattr(cause, 'strerror', None) or cause}" if cause else str(exc)
        where = getattr(cause, "filename", None) or "the run dir"
        fail(f"cannot write the run's log {where} ({why}): is hydra.run.dir writable by this user?", code=1)
    except Exception as exc:
        if type(exc).__name__ != "FailedJobError" or "submitit" not in type(exc).__module__:
            raise
        # sbatch refused the job (a GPU type, partition or size the cluster lacks): its own words.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "no reason given")
        fail(f"the cluster refused the job ({why[:300]}); check hydra.launcher.* (partition, gpus_per_node, "
             f"constraint, mem_gb, cpus_per_task) against sinfo", code=1)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)
