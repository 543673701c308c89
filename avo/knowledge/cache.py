"""The on-disk cache of indexed sources: one JSON file per (source, version).

JSON rather than pickle, so a cache directory shared between users or copied between machines can
never execute code. A source's stale versions are removed when a new one is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Optional

log = logging.getLogger("avo.knowledge")

# Bump when chunking or tokenizing changes: every cached index is then rebuilt.
INDEX_FORMAT = 4


def default_dir(configured: Optional[str] = None) -> Path:
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "avo" / "knowledge"


def _stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def entry_path(cache_dir: Path, name: str, fingerprint: str) -> Path:
    return cache_dir / f"{_stem(name)}-{fingerprint}.json"


def load(path: Path) -> Optional[dict]:
    try:
        with path.open("r", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("knowledge cache %s is unreadable (%s); rebuilding it", path, exc)
        return None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        return None
    return data


def save(path: Path, data: dict) -> bool:
    """Atomic write (readers never see half a file); a read-only cache dir only costs speed."""
    data = {"format": INDEX_FORMAT, **data}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the knowledge cache %s (%s); continuing without it", path, exc)
        return False
    for old in path.parent.glob(path.name.rsplit("-", 1)[0] + "-*.json"):
        if old != path and old.name.rsplit("-", 1)[0] == path.name.rsplit("-", 1)[0]:
            try:
                old.unlink()
            except OSError:
                pass
    return True
