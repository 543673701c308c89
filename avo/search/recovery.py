"""A run whose archive is gone, empty or damaged is rebuilt from its own signed records, and says so.

Every iteration's proposal and evaluations are kept in results/<n>/, signed with the run's key
(avo/search/results.py), where no candidate writes. With the archive lost, the engine replays
the iterations: a proposal and a result the key authenticates are used again, anything else is
proposed or evaluated again. A damaged archive is moved aside (never deleted) first; with no
records to rebuild from, it stays an error.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from avo.archive import FILENAME, Archive, DamagedArchive


def _recorded(run_dir: Path) -> list[int]:
    """Iterations with a record in results/ (the seed is 0)."""
    root = run_dir / "results"
    if not root.is_dir():
        return []
    return sorted(int(d.name) for d in root.iterdir() if d.name.isdigit() and any(d.glob("*.json")))


def _is_sqlite(db: Path) -> bool:
    with open(db, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _rebuilding(iterations: list[int]) -> str:
    later = [n for n in iterations if n > 0]
    return (f"rebuilding it from the signed records in results/ ({len(later)} iteration(s) and the seed): "
            f"those the run's key authenticates are reused, the rest are run again")


def prepare_archive(run_dir: str | Path) -> Optional[str]:
    """Before a search opens its archive: what was done about a lost or damaged one (a line to
    show the user), or None when it is whole. Raises DamagedArchive when nothing can rebuild it."""
    run_dir = Path(run_dir)
    db = run_dir / FILENAME
    recorded = _recorded(run_dir)
    if not db.exists() or (db.is_file() and db.stat().st_size == 0):
        # Decided before anything opens it: opening would write an empty database over the
        # evidence (a 0-byte file is what a full disk or a kill during creation leaves).
        if not recorded and _has_versions(run_dir):
            raise DamagedArchive(_NOTHING_TO_REBUILD.format(db=db, what="missing" if not db.exists() else "0 bytes"))
        return ("the run's archive is missing or empty but results/ is not; " + _rebuilding(recorded)) if recorded else None
    try:
        with Archive(db) as archive:
            empty = archive.best() is None and archive.count() == 0
    except DamagedArchive:
        # Only a file that is not a database at all is moved (a locked or half-readable one is
        # the user's to look at).
        if not recorded or _is_sqlite(db):
            raise
        aside = db.with_name(f"{FILENAME}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            part = db.with_name(db.name + suffix)
            if part.exists():
                part.rename(aside.with_name(aside.name + suffix))
        return f"the run's archive was damaged and is moved to {aside.name}; " + _rebuilding(recorded)
    if empty and recorded:
        return "the run's archive is missing or empty but results/ is not; " + _rebuilding(recorded)
    if empty and _has_versions(run_dir):
        # Its lineage holds versions, and nothing signed says what they scored: starting over
        # would put a new seed on top of them, silently.
        raise DamagedArchive(_NOTHING_TO_REBUILD.format(db=db, what="empty"))
    return None


_NOTHING_TO_REBUILD = (
    "the run's archive {db} is {what} but its lineage/ holds versions, and there is no results/ to rebuild "
    "it from: restore the archive from a backup, or start a new hydra.run.dir (move lineage/ and "
    "candidates/ aside to start this one over)")


def _has_versions(run_dir: Path) -> bool:
    from avo.lineage import Lineage, LineageError

    if not (run_dir / "lineage").is_dir():
        return False
    try:
        return Lineage.of_run(run_dir).head() is not None
    except LineageError:
        return True  # a lineage that cannot be read is not "nothing"
