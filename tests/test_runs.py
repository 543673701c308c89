"""`python -m avo.runs`: list runs, their versions, one version, and export a kernel (read-only)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avo import runs
from avo.archive import Archive, Candidate, Version, source_hash
from avo.lineage import Lineage

ROOT = Path(__file__).resolve().parents[1]
SEED = (ROOT / "kernels" / "reference" / "chunked.py").read_text()
BETTER = SEED.replace('KNOBS = {"block_m": 16', 'KNOBS = {"block_m": 64', 1)
ROWS = [{"label": "b2_s100_h4_d64", "tflops": 1.5, "time_ms": 0.2, "baseline_ratios": {"cudnn": 1.07}}]


@pytest.fixture
def run(tmp_path):
    assert BETTER != SEED
    d = tmp_path / "outputs" / "smoke" / "r1"
    lin = Lineage.of_run(d)
    lin.init()
    sha0 = lin.commit(SEED, "seed: chunked", {"Candidate": 0, "Score": "1.0"})
    sha1 = lin.commit(BETTER, "block_m 64", {"Candidate": 1, "Score": "1.5"})
    for n, src in ((0, SEED), (1, BETTER)):
        (d / "candidates" / f"{n:04d}").mkdir(parents=True)
        (d / "candidates" / f"{n:04d}" / "kernel.py").write_text(src)
    with Archive(d) as arch:
        arch.add_seed(Version(0, 0, sha0, source_hash(SEED), 1.0, path="candidates/0000/kernel.py"))
        arch.record(Candidate(1, 0, "knob", "ok", "accepted", True, source_hash(BETTER), "diff", "block_m 64",
                              score=1.5, incumbent_ratio=1.5, incumbent_ratio_spread=0.01, cost_usd=0.25),
                    Version(1, 1, sha1, source_hash(BETTER), 1.5, {"cudnn": 1.07}, ROWS, "block_m 64",
                            path="candidates/0001/kernel.py"))
    return d


def test_list_versions_show(run, capsys):
    assert runs.main(["list", str(run.parents[1])]) == 0
    out = capsys.readouterr().out
    assert "1.5" in out and "1 of 1" in out and "$0.25" in out and "candidates/0001/kernel.py" in out
    assert "TFLOP/s" in out
    assert runs.main(["versions", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["0", "0", "1"] and "block_m 64" in out[2] and "cudnn x1.070" in out[2]
    assert runs.main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "v1 (candidate 1)" in out and "x1.5000 against its incumbent" in out
    assert "b2_s100_h4_d64" in out and "1.070" in out and '+KNOBS = {"block_m": 64' in out


def test_export_writes_the_measured_kernel_and_refuses_a_tampered_lineage(run, tmp_path, capsys):
    out = tmp_path / "best.py"
    assert runs.main(["export", str(run), str(out)]) == 0 and out.read_text() == BETTER
    assert runs.main(["export", str(run), "v0", str(tmp_path)]) == 0
    assert (tmp_path / "kernel_v0.py").read_text() == SEED
    with Archive(run) as arch:  # the archive says v1 was another source than the lineage holds
        arch._db.execute("UPDATE versions SET source_hash = 'x' WHERE version = 1")
    with pytest.raises(SystemExit):
        runs.main(["export", str(run), str(tmp_path / "no.py")])
    assert "does not match the hash" in capsys.readouterr().err and not (tmp_path / "no.py").exists()


def test_mistakes_are_one_line():
    for args in (["show", "/nonexistent/run"], ["list", "/nonexistent"]):
        p = subprocess.run([sys.executable, "-m", "avo.runs", *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.startswith("avo: error:")


def test_show_diffs_a_version_against_its_parent_not_the_one_before(run, capsys):
    # A search restarted from the seed: v2 was made from v0, so its diff is v0 -> v2.
    third = SEED.replace('KNOBS = {"block_m": 16', 'KNOBS = {"block_m": 32', 1)
    sha2 = Lineage.of_run(run).commit(third, "block_m 32", {"Candidate": 2, "Score": "1.6"})
    with Archive(run) as arch:
        arch.record(Candidate(2, 0, "knob", "ok", "accepted", True, source_hash(third), "diff", "block_m 32",
                              score=1.6, incumbent_ratio=1.1),
                    Version(2, 2, sha2, source_hash(third), 1.6, rationale="block_m 32"))
    assert runs.main(["show", str(run), "v2"]) == 0
    out = capsys.readouterr().out
    assert "diff v0 (its parent) -> v2" in out
    assert '-KNOBS = {"block_m": 16' in out and '+KNOBS = {"block_m": 32' in out, out


def test_list_goes_on_past_a_damaged_run_and_writes_nothing(run, capsys):
    broken = run.parent / "r0"
    broken.mkdir()
    (broken / "archive.sqlite").write_bytes(b"")  # a search killed before its first write
    assert runs.main(["list", str(run.parents[1])]) == 0
    out = capsys.readouterr().out
    assert "r0" in out and "0 bytes" in out and "candidates/0001/kernel.py" in out
    assert (broken / "archive.sqlite").stat().st_size == 0  # a reader never writes the schema into it
    with pytest.raises(SystemExit):
        runs.main(["show", str(broken)])
    assert "0 bytes" in capsys.readouterr().err


def test_avo_runs_is_the_runs_tool(run):
    p = subprocess.run([sys.executable, "-m", "avo", "runs", "versions", str(run)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "block_m 64" in p.stdout, p.stderr


@pytest.mark.skipif(not shutil.which("bwrap"), reason="needs bubblewrap for a read-only mount")
def test_a_read_only_run_dir_is_read(run):
    # As root a chmod stops nothing: the run dir is mounted read-only instead.
    probe = subprocess.run(["bwrap", "--dev-bind", "/", "/", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("bubblewrap cannot run here")
    for args in (["show", str(run)], ["list", str(run)]):
        p = subprocess.run(["bwrap", "--dev-bind", "/", "/", "--ro-bind", str(run), str(run),
                            sys.executable, "-m", "avo.runs", *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-1500:]
        assert "damaged" not in p.stdout + p.stderr and "1.5" in p.stdout
