"""The archive: one row per finished iteration, contiguous ids, atomic records, readable by tools."""

import sqlite3

import pytest

from avo.archive import Archive, Candidate, Version, open_run, source_hash


def _cand(i, accepted=False, **kw):
    base = dict(id=i, parent=0, operator="knob", status="ok", verdict="accepted" if accepted else "slower",
                accepted=accepted, source_hash=f"h{i}", score=float(i), speedups={"cudnn": 0.5 * i},
                metrics=[{"label": "s", "tflops": float(i)}], tokens=10, cost_usd=0.25)
    base.update(kw)
    return Candidate(**base)


def _seed():
    return Version(0, 0, "a" * 40, source_hash("seed"), 1.0, {"cudnn": 0.1}, [], "seed: x", "candidates/0000/kernel.py")


def test_round_trip_and_contiguity(tmp_path):
    a = Archive(tmp_path)
    a.add_seed(_seed(), meta={"elapsed_s": 1.5})
    a.add_seed(_seed())  # idempotent on resume
    a.record(_cand(1))
    a.record(_cand(2, accepted=True, version=1, lineage_sha="b" * 40), Version(1, 2, "b" * 40, "h2", 2.0))
    with pytest.raises(ValueError, match="breaks the sequence"):
        a.record(_cand(4))
    with pytest.raises(ValueError, match="lineage version"):
        a.record(_cand(3, accepted=True))
    with pytest.raises(ValueError, match="lineage version"):
        a.record(_cand(3), Version(2, 3, "c" * 40))
    assert a.count() == 2  # the failed records left nothing behind
    a.close()

    b = open_run(tmp_path)
    rows = b.candidates()
    assert [r.id for r in rows] == [1, 2]
    assert rows[1].accepted and not rows[0].accepted
    assert rows[0].speedups == {"cudnn": 0.5} and rows[0].metrics == [{"label": "s", "tflops": 1.0}]
    assert [v.version for v in b.versions()] == [0, 1]
    assert b.best().candidate == 2 and b.version_of(0).sha == "a" * 40
    assert b.seen_hashes() == {source_hash("seed"), "h1", "h2"}
    assert b.find_hash("h1").id == 1 and b.find_hash("nope") is None
    assert b.status_counts() == {"ok": 2}
    assert b.totals() == {"tokens": 20, "cost_usd": 0.5, "accepted": 1}
    assert b.get_meta("elapsed_s") == 1.5
    assert [r.id for r in b.candidates(limit=1)] == [2]
    assert [r.id for r in b.candidates(accepted=False)] == [1]
    assert "slower" in b.summary()


def test_schema_columns_and_wal(tmp_path):
    Archive(tmp_path).close()
    db = sqlite3.connect(tmp_path / "archive.sqlite")
    cols = {r[1] for r in db.execute("PRAGMA table_info(candidates)")}
    for needed in ("id", "parent", "operator", "source_hash", "diff", "status", "stage", "metrics", "score",
                   "accepted", "tokens", "cost_usd", "eval_s", "wall_s", "speedups"):
        assert needed in cols
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_open_run_needs_an_archive(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_run(tmp_path)


def test_a_damaged_archive_is_one_clear_line_for_the_search_and_the_report(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from avo.archive import DamagedArchive

    (tmp_path / "archive.sqlite").write_bytes(b"not a database, written over by accident\n" * 100)
    with pytest.raises(DamagedArchive, match="is damaged"):
        Archive(tmp_path)
    root = Path(__file__).resolve().parents[1]
    for cmd in ([sys.executable, "-m", "avo.report", str(tmp_path)],
                [sys.executable, "-m", "avo", "+experiment=smoke", "evaluator.repeats=5", "logger=none", f"hydra.run.dir={tmp_path}"]):
        p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
        assert "archive" in p.stderr and "is damaged" in p.stderr.strip().splitlines()[-1]


def test_an_empty_archive_beside_a_lineage_with_no_records_is_refused_not_started_over(tmp_path):
    from avo.archive import DamagedArchive
    from avo.lineage import Lineage
    from avo.search.recovery import prepare_archive

    lin = Lineage.of_run(tmp_path)
    lin.init()
    assert prepare_archive(tmp_path) is None  # a lineage with no version yet is a new run
    assert not (tmp_path / "archive.sqlite").exists()  # deciding creates nothing
    lin.commit("def attention(q, k, v, causal=False):\n    return q\n", "seed: x", {"Candidate": 0})
    with pytest.raises(DamagedArchive, match="is missing but its lineage/ holds versions"):
        prepare_archive(tmp_path)
    assert not (tmp_path / "archive.sqlite").exists()
    (tmp_path / "archive.sqlite").write_bytes(b"")
    with pytest.raises(DamagedArchive, match="is 0 bytes but its lineage/ holds versions"):
        prepare_archive(tmp_path)
    assert (tmp_path / "archive.sqlite").stat().st_size == 0  # the evidence is left as it was
