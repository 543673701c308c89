"""search.transfer_from from the command line: a new search seeded from another run's best version
(the paper's GQA-from-MHA continuation), recorded in the lineage, kept across resumes, shown in
the report; a wrong run dir is one line."""

import subprocess
import sys
from pathlib import Path

import pytest

from avo.archive import Archive
from avo.lineage import Lineage

ROOT = Path(__file__).resolve().parents[1]


def _avo(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avo", "+experiment=smoke", "evaluator.repeats=5", "logger=none", *overrides],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_transfer_seeds_from_the_other_runs_best_and_records_it(tmp_path):
    mha, gqa = tmp_path / "mha", tmp_path / "gqa"
    first = _avo("search.max_iterations=2", f"hydra.run.dir={mha}")
    assert first.returncode == 0, first.stderr[-2000:]
    best_sha = Lineage.of_run(mha).head()
    best_source = Lineage.of_run(mha).show(best_sha)

    second = _avo("search.max_iterations=1", "search.max_wall_time_s=1800", f"search.transfer_from={mha}",
                  f"hydra.run.dir={gqa}")
    assert second.returncode == 0, second.stderr[-2000:]
    seed = Lineage.of_run(gqa).versions()[0]
    assert seed.subject == f"seed: transferred from {mha}@{best_sha}"
    assert Lineage.of_run(gqa).show(0) == best_source
    with Archive(gqa) as archive:
        assert archive.get_meta("seed_origin") == f"transferred from {mha}@{best_sha}"
        assert archive.versions()[0].score is not None  # re-measured on this run's suite and device

    # The source run moves on; the transferred run, resumed, keeps the seed it started from.
    Lineage.of_run(mha).commit(best_source + "\n# later\n", "a later version of the source run", {})
    again = _avo("search.max_iterations=2", "search.max_wall_time_s=1800", f"search.transfer_from={mha}",
                 f"hydra.run.dir={gqa}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert Lineage.of_run(gqa).versions()[0].sha == seed.sha
    with Archive(gqa) as archive:
        assert archive.count() == 2

    out = tmp_path / "r.html"
    rep = subprocess.run([sys.executable, "-m", "avo.report", str(gqa), "--html", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    assert f"transferred from {mha}@{best_sha}" in out.read_text()


def test_transfer_from_a_dir_that_is_no_run_is_one_line(tmp_path):
    proc = _avo("search.max_iterations=1", f"search.transfer_from={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "has no lineage/" in err[0], proc.stderr
