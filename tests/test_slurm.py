"""Sweeps on a real Slurm (single node; `bash .ci/slurm.sh up` starts one; skipped without it):
a two-job sweep, an `scontrol requeue` in the middle of an evaluation, and a time-limit requeue
(USR2, submitit's checkpoint). Each checks that no iteration is lost or repeated, no crash row
appears, and the multirun exits 0. Timings here are hang-catchers, not claims."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avo.archive import open_run

ROOT = Path(__file__).resolve().parents[1]


def _slurm_up() -> bool:
    if not shutil.which("sinfo") or not shutil.which("sacct"):
        return False
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [pytest.mark.slurm, pytest.mark.timeout(2400), pytest.mark.skipif(not _slurm_up(), reason="no Slurm here (bash .ci/slurm.sh up)")]


def _sweep(sweep_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "avo", "-m", "+experiment=smoke", "hydra/launcher=submitit_slurm",
            "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
            "logger=none", f"hydra.sweep.dir={sweep_dir}", *overrides]


def _rows(run: Path):
    with open_run(run) as arch:
        return arch.candidates()


def _events(run: Path) -> list[dict]:
    try:
        return [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines() if x.strip()]
    except OSError:
        return []


def _job_id(name: str = "avo-smoke") -> str:
    out = subprocess.run(["squeue", "-h", "-n", name, "-t", "RUNNING", "-o", "%i"], capture_output=True,
                         text=True, timeout=30).stdout.split()
    return out[0] if out else ""


def _check(run: Path, iterations: int) -> None:
    rows = _rows(run)
    assert [r.id for r in rows] == list(range(1, iterations + 1)), [(r.id, r.status) for r in rows]
    assert all(r.status != "crash" for r in rows), [(r.id, r.status, r.message) for r in rows]


def test_a_two_job_sweep_runs_and_ends_with_its_table(tmp_path):
    p = subprocess.run(_sweep(tmp_path / "sw", "search.max_iterations=2", "search.seed=0,1",
                              "hydra.launcher.timeout_min=30"), cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    for job in ("0", "1"):
        _check(tmp_path / "sw" / job, 2)
    assert "report: python -m avo.report" in p.stdout and p.stdout.count(" of 2 ") == 2, p.stdout[-2000:]


def test_scontrol_requeue_in_the_middle_of_an_evaluation_loses_nothing(tmp_path):
    sw = tmp_path / "sw"
    proc = subprocess.Popen(_sweep(sw, "search.max_iterations=3", "hydra.launcher.timeout_min=30"), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = sw / "0"
    end = time.monotonic() + 900
    while time.monotonic() < end and not any(e.get("event") == "evaluate" and e.get("candidate") == 2
                                             and e.get("phase") == "start" for e in _events(run)):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    time.sleep(1.0)
    job = _job_id()
    assert job, "the job is not running"
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)  # SIGTERM to every process of it
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, err[-3000:]
    _check(run, 3)
    assert any(e.get("event") == "stop" and "SIGTERM" in str(e.get("reason")) for e in _events(run))


def test_a_time_limit_requeue_resumes_the_search(tmp_path):
    sw = tmp_path / "sw"
    p = subprocess.run(_sweep(sw, "search.max_iterations=6", "hydra.launcher.timeout_min=1",
                              "hydra.launcher.signal_delay_s=25", "hydra.launcher.max_num_timeout=6"),
                       cwd=ROOT, capture_output=True, text=True, timeout=2400)
    assert p.returncode == 0, p.stderr[-3000:]
    run = sw / "0"
    _check(run, 6)
    starts = [e for e in _events(run) if e.get("event") == "start"]
    assert len(starts) >= 2, "the job was never requeued: the test did not test a time limit"
