"""The run's own history as a searchable source: lineage commit messages, archive records, and
notes files in the run directory.

Rebuilt at every construction and never cached: it changes every iteration and is small. The
lineage is read with `git log` and the archive with sqlite3 directly, so this works whatever state
the search's own modules are in; every part is optional and read defensively.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
from pathlib import Path

from avo.knowledge.chunks import Chunk, chunk_file
from avo.knowledge.sources import TEXT_SUFFIXES, MAX_FILE_BYTES

log = logging.getLogger("avo.knowledge")

LINEAGE_DOC = "lineage.log"  # virtual documents: they exist only in memory
ARCHIVE_DOC = "archive.txt"
# Those of avo/archive.py's columns worth searching, in display order; absent ones are skipped.
_ARCHIVE_COLUMNS = (
    "id", "iteration", "parent", "parent_id", "operator", "status", "stage", "verdict", "accepted",
    "score", "best_score", "incumbent_ratio", "speedups", "intervention", "directive", "message",
    "rationale",
)
_MAX_ARCHIVE_ROWS = 5000  # newest first; older attempts matter less than recent ones
_NOTE_DIRS = (".", "notes", "lineage")


def _lineage(run_dir: Path) -> tuple[list[str], list[Chunk]]:
    repo = run_dir / "lineage"
    if not (repo / ".git").exists() and not (repo / "HEAD").exists():
        return [], []
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), "log", "--date=iso", "--format=%H%x1f%ad%x1f%B%x1e"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot read the lineage in %s: %s", repo, exc)
        return [], []
    if proc.returncode != 0:
        return [], []  # an empty repo (no commit yet) also lands here
    lines: list[str] = []
    chunks: list[Chunk] = []
    for record in proc.stdout.split("\x1e"):
        fields = record.strip("\n").split("\x1f")
        if len(fields) != 3:
            continue
        sha, date, message = fields
        body = [f"commit {sha}", f"date {date}", *message.strip().splitlines(), ""]
        start = len(lines) + 1
        lines += body
        subject = message.strip().splitlines()[0] if message.strip() else sha[:12]
        chunks.append(Chunk(LINEAGE_DOC, start, len(lines) - 1, f"lineage {sha[:10]}: {subject}",
                            subject, "\n".join(body)))
    return lines, chunks


def _archive(run_dir: Path) -> tuple[list[str], list[Chunk]]:
    dbs = sorted(p for p in run_dir.glob("archive*") if p.suffix in (".db", ".sqlite", ".sqlite3"))
    if not dbs:
        return [], []
    try:
        con = sqlite3.connect(f"file:{dbs[0]}?mode=ro", uri=True, timeout=5)
        try:
            present = [r[1] for r in con.execute("PRAGMA table_info(candidates)")]
            cols = [c for c in _ARCHIVE_COLUMNS if c in present]
            if not cols:
                return [], []
            rows = con.execute(
                f"SELECT {', '.join(cols)} FROM candidates ORDER BY rowid DESC LIMIT {_MAX_ARCHIVE_ROWS}"
            ).fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        log.warning("cannot read the archive %s: %s", dbs[0], exc)
        return [], []
    lines: list[str] = []
    chunks: list[Chunk] = []
    for row in reversed(rows):
        rec = dict(zip(cols, row))
        text = " ".join(f"{k}={' '.join(str(v).split())}" for k, v in rec.items() if v not in (None, ""))
        lines.append(text)
        ident = rec.get("id", len(lines))
        chunks.append(Chunk(ARCHIVE_DOC, len(lines), len(lines), f"candidate {ident} ({rec.get('status', '?')})",
                            f"candidate {ident}", text))
    return lines, chunks


def _notes(run_dir: Path) -> list[Chunk]:
    out: list[Chunk] = []
    for sub in _NOTE_DIRS:
        folder = run_dir / sub
        if not folder.is_dir():
            continue
        pattern = "**/*" if sub == "notes" else "*"
        for path in sorted(folder.glob(pattern)):
            if not path.is_file() or path.suffix not in TEXT_SUFFIXES or path.suffix == ".py":
                continue
            # A link may lead to any file (a symlink) or be a second name of one (a hard link).
            if path.is_symlink() or path.stat().st_nlink > 1 or path.stat().st_size > MAX_FILE_BYTES:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            out += chunk_file(path.relative_to(run_dir).as_posix(), text)
    return out


def build(run_dir: Path) -> tuple[dict[str, list[str]], list[Chunk]]:
    """(virtual documents by path, chunks) of a run directory."""
    docs: dict[str, list[str]] = {}
    chunks: list[Chunk] = []
    for name, (lines, found) in ((LINEAGE_DOC, _lineage(run_dir)), (ARCHIVE_DOC, _archive(run_dir))):
        if lines:
            docs[name] = lines
            chunks += found
    chunks += _notes(run_dir)
    return docs, chunks
