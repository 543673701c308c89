"""Every candidate ever evaluated, in SQLite (`archive.sqlite` in the run dir).

Tables:
- `candidates`: one row per search iteration, `id` = the iteration number (1, 2, ... contiguous).
  A row is written in ONE transaction only once the iteration is decided, so the row count is the
  number of finished iterations and a killed run loses at most the one in flight.
- `versions`: the accepted versions, i.e. the lineage: version 0 is the seed (candidate id 0, which
  has no `candidates` row), version k is the k-th accepted candidate.
- `meta`: key/value run state (elapsed wall time across resumes, W&B id, ...).

WAL mode, so the agent's tools may read while the search writes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from avo.config import ConfigError

FILENAME = "archive.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,            -- the iteration number, 1-based
    parent INTEGER NOT NULL,           -- candidate id of the version varied (0 = the seed)
    operator TEXT NOT NULL,
    source_hash TEXT,
    diff TEXT,                         -- unified diff against the parent
    rationale TEXT,
    status TEXT NOT NULL,              -- evaluator status, or operator_error / duplicate
    stage TEXT,                        -- the failing stage, if any
    message TEXT,
    verdict TEXT NOT NULL,             -- accepted | failed:<stage> | slower | not-confirmed | ...
    accepted INTEGER NOT NULL,
    score REAL,                        -- geomean TFLOP/s over the suite
    speedups TEXT,                     -- JSON {baseline: ratio}
    metrics TEXT,                      -- JSON list of per-shape results
    incumbent_ratio REAL,              -- from the interleaved confirmation, when one ran
    incumbent_ratio_spread REAL,
    best_score REAL,                   -- the incumbent's score when this candidate was judged
    version INTEGER,                   -- lineage version number when accepted
    lineage_sha TEXT,
    intervention TEXT,                 -- supervisor intervention applied this iteration
    directive TEXT,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    propose_s REAL,
    eval_s REAL,
    confirm_s REAL,
    wall_s REAL,
    result_path TEXT,                  -- the evaluator JSON, relative to the run dir
    created_at TEXT
);
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY,
    candidate INTEGER NOT NULL UNIQUE,
    sha TEXT NOT NULL,
    source_hash TEXT,
    score REAL,
    speedups TEXT,
    metrics TEXT,
    rationale TEXT,
    path TEXT,                         -- the kernel file, relative to the run dir
    created_at TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

_JSON_FIELDS = ("speedups", "metrics")


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Candidate:
    id: int
    parent: int
    operator: str
    status: str
    verdict: str
    accepted: bool = False
    source_hash: Optional[str] = None
    diff: Optional[str] = None
    rationale: Optional[str] = None
    stage: Optional[str] = None
    message: Optional[str] = None
    score: Optional[float] = None
    speedups: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] | None = None
    incumbent_ratio: Optional[float] = None
    incumbent_ratio_spread: Optional[float] = None
    best_score: Optional[float] = None
    version: Optional[int] = None
    lineage_sha: Optional[str] = None
    intervention: Optional[str] = None
    directive: Optional[str] = None
    tokens: int = 0
    cost_usd: float = 0.0
    propose_s: Optional[float] = None
    eval_s: Optional[float] = None
    confirm_s: Optional[float] = None
    wall_s: Optional[float] = None
    result_path: Optional[str] = None
    created_at: Optional[str] = None


@dataclass
class Version:
    version: int
    candidate: int
    sha: str
    source_hash: Optional[str] = None
    score: Optional[float] = None
    speedups: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] | None = None
    rationale: Optional[str] = None
    path: Optional[str] = None
    created_at: Optional[str] = None


def _to_row(obj) -> dict[str, Any]:
    row = asdict(obj)
    for key in _JSON_FIELDS:
        if key in row and row[key] is not None:
            row[key] = json.dumps(row[key], default=str)
    if "accepted" in row:
        row["accepted"] = int(bool(row["accepted"]))
    row["created_at"] = row.get("created_at") or _now()
    return row


def _from_row(cls, row: sqlite3.Row):
    data = {f.name: row[f.name] for f in fields(cls)}
    for key in _JSON_FIELDS:
        if key in data and data[key] is not None:
            data[key] = json.loads(data[key])
    if "accepted" in data:
        data["accepted"] = bool(data["accepted"])
    return cls(**data)


class DamagedArchive(ConfigError):
    """The archive file exists but is not a readable SQLite database (one line, never a traceback)."""


class ArchiveUnwritable(ConfigError):
    """The archive is a database but cannot be written here (a read-only run dir or file)."""


def _is_database(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _unwritable(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _open_readonly(path: Path) -> sqlite3.Connection:
    """For the tools that only read a run (avo.runs, avo.report): nothing is created or changed,
    an empty file stays empty, and a run dir that cannot be written is still readable."""
    if not path.is_file():
        raise DamagedArchive(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise DamagedArchive(f"the run's archive {path} is damaged or new (0 bytes): its search never got to record "
                             f"anything, or the file was truncated; `python -m avo` on the run dir rebuilds it "
                             f"where results/ allows")
    if not _is_database(path):
        raise DamagedArchive(f"the run's archive {path} is damaged (not an SQLite database): move it aside (the "
                             f"candidates' files, results/ and lineage/ stay), or restore it from a backup")
    last: Optional[BaseException] = None
    # mode=ro reads a live WAL database; where its -shm cannot be made (a read-only dir), immutable.
    for flags in ("mode=ro", "mode=ro&immutable=1"):
        try:
            db = sqlite3.connect(f"file:{path}?{flags}", uri=True, timeout=30.0)
            db.row_factory = sqlite3.Row
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.DatabaseError as exc:
            last = exc
    raise DamagedArchive(f"cannot read the run's archive {path} ({last})")


class Archive:
    """The run's SQLite archive (give the run dir). Cheap to open; other processes may read it
    while the search writes. One connection per thread (sqlite3's rule)."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        path = Path(path)
        # A run dir (existing or not) or the database file itself.
        self.path = path if path.suffix in (".sqlite", ".db") else path / FILENAME
        if readonly:
            self._db = _open_readonly(self.path)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: every write below opens its own explicit transaction.
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        except (OSError, sqlite3.OperationalError) as exc:
            raise ArchiveUnwritable(f"cannot open the run's archive {self.path} for writing "
                                    f"({getattr(exc, 'strerror', None) or exc}): is the run dir writable?") from None
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if _unwritable(exc) and _is_database(self.path):
                raise ArchiveUnwritable(f"cannot write the run's archive {self.path} ({exc}): "
                                        f"is the run dir writable?") from None
            raise DamagedArchive(
                f"the run's archive {self.path} is damaged ({exc}): move it aside (the candidates' files, "
                f"results/ and lineage/ stay) and start a new run dir, or restore it from a backup") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def _insert(self, table: str, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(row.values()))

    def _set_meta(self, items: dict[str, Any]) -> None:
        for key, value in items.items():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def add_seed(self, seed: Version, meta: dict[str, Any] | None = None) -> None:
        """Version 0. Idempotent: a second call (a resumed run) is ignored."""
        if seed.version != 0 or seed.candidate != 0:
            raise ValueError("the seed is version 0, candidate 0")
        with self._transaction():
            if self._db.execute("SELECT 1 FROM versions WHERE version = 0").fetchone():
                return
            self._insert("versions", _to_row(seed))
            self._set_meta(meta or {})

    def record(self, cand: Candidate, version: Version | None = None, meta: dict[str, Any] | None = None) -> None:
        """One finished iteration (and its lineage version when accepted), atomically."""
        with self._transaction():
            expected = self._db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] + 1
            if cand.id != expected:
                raise ValueError(f"candidate id {cand.id} breaks the sequence (next is {expected})")
            if cand.accepted != (version is not None):
                raise ValueError("an accepted candidate needs its lineage version, and only it")
            self._insert("candidates", _to_row(cand))
            if version is not None:
                self._insert("versions", _to_row(version))
            self._set_meta(meta or {})

    def set_meta(self, **items: Any) -> None:
        with self._transaction():
            self._set_meta(items)

    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, *_):
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    # -- reading (the agent's tools use these) ---------------------------------------------

    def count(self) -> int:
        """Finished iterations."""
        return self._db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]

    def candidates(self, *, limit: int | None = None, status: str | None = None,
                   accepted: bool | None = None) -> list[Candidate]:
        """Oldest first; `limit` keeps the most recent ones."""
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if accepted is not None:
            where.append("accepted = ?")
            args.append(int(accepted))
        sql = "SELECT * FROM candidates" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
        return [_from_row(Candidate, r) for r in reversed(self._db.execute(sql, args).fetchall())]

    def candidate(self, cid: int) -> Candidate | None:
        row = self._db.execute("SELECT * FROM candidates WHERE id = ?", (cid,)).fetchone()
        return _from_row(Candidate, row) if row else None

    def versions(self) -> list[Version]:
        """The lineage, seed first."""
        rows = self._db.execute("SELECT * FROM versions ORDER BY version").fetchall()
        return [_from_row(Version, r) for r in rows]

    def version_of(self, candidate: int) -> Version | None:
        row = self._db.execute("SELECT * FROM versions WHERE candidate = ?", (candidate,)).fetchone()
        return _from_row(Version, row) if row else None

    def best(self) -> Version | None:
        """The current incumbent: the latest version (each one beat the one before)."""
        row = self._db.execute("SELECT * FROM versions ORDER BY version DESC LIMIT 1").fetchone()
        return _from_row(Version, row) if row else None

    def find_hash(self, source_hash: str) -> Candidate | None:
        row = self._db.execute("SELECT * FROM candidates WHERE source_hash = ? ORDER BY id LIMIT 1",
                               (source_hash,)).fetchone()
        return _from_row(Candidate, row) if row else None

    def seen_hashes(self) -> set[str]:
        """Source hashes of every version and candidate so far (what not to propose again)."""
        rows = self._db.execute(
            "SELECT source_hash FROM candidates UNION SELECT source_hash FROM versions").fetchall()
        return {r[0] for r in rows if r[0]}

    def status_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM candidates GROUP BY status").fetchall()
        return {r[0]: r[1] for r in rows}

    def totals(self) -> dict[str, float]:
        row = self._db.execute(
            "SELECT COALESCE(SUM(tokens), 0), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(accepted), 0) "
            "FROM candidates").fetchone()
        return {"tokens": int(row[0]), "cost_usd": float(row[1]), "accepted": int(row[2])}

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def summary(self, limit: int = 20) -> str:
        """A compact text table of the most recent candidates, for prompts and tool output."""
        lines = ["id  parent  operator  verdict          score       rationale"]
        for c in self.candidates(limit=limit):
            score = f"{c.score:.4g}" if c.score is not None else "-"
            why = (c.rationale or c.message or "").splitlines()[0][:70] if (c.rationale or c.message) else ""
            lines.append(f"{c.id:<3} {c.parent:<7} {c.operator:<9} {c.verdict:<16} {score:<11} {why}")
        return "\n".join(lines)


def open_run(run_dir: str | Path) -> Archive:
    """For tools and reports: the archive of an existing run (fails clearly if there is none)."""
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"no {FILENAME} in {run_dir}")
    return Archive(path, readonly=True)
