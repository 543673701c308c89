"""Sweeps through hydra-submitit-launcher: a two-job local sweep (each job its own run dir and
archive, then a report over it), a job requeued by submitit mid-search that resumes from its run
dir, and the Slurm presets turned into sbatch scripts (offline)."""

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _rows(run_dir: Path) -> list[tuple]:
    db = run_dir / "archive.sqlite"
    if not db.is_file():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT id, verdict FROM candidates ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the table is not there yet
        return []
    finally:
        con.close()


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _multirun(sweep: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "avo", "-m", "+experiment=smoke", "evaluator.repeats=5", "hydra/launcher=submitit_local",
            f"hydra.sweep.dir={sweep}", *overrides]


@pytest.mark.slow
def test_two_job_local_sweep_then_report(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(_multirun(sweep, "search.max_iterations=2", "search.seed=0,1"),
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name for j in jobs] == ["0", "1"]
    for num, job in enumerate(jobs):
        assert [r[0] for r in _rows(job)] == [1, 2]  # its own archive, two iterations
        assert yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["search"]["seed"] == num
        assert (job / "lineage" / ".git").is_dir()
        assert list((job / "wandb").glob("offline-run-*"))  # W&B offline by default, in the run dir
    assert {e["pid"] for e in _events(jobs[0])} != {e["pid"] for e in _events(jobs[1])}  # two processes

    out = tmp_path / "report.html"
    rep = subprocess.run([sys.executable, "-m", "avo.report", str(sweep), "--html", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert rep.returncode == 0, rep.stderr
    page = out.read_text()
    assert "search.seed=0" in page and "search.seed=1" in page
    images = page.split('src="data:image/png;base64,')[1:]
    assert len(images) == 5
    assert all(base64.b64decode(i.split('"', 1)[0]).startswith(b"\x89PNG") for i in images)


@pytest.mark.slow
def test_a_requeued_job_resumes_from_its_run_dir(tmp_path):
    """submitit's preemption signal (USR2) reaches the job mid-search: the launcher's checkpoint()
    resubmits the same job (same sweep subdir), the local executor restarts it, and the search
    continues where it was, without repeating a finished evaluation."""
    sweep = tmp_path / "sweep"
    job = sweep / "0"
    proc = subprocess.Popen(_multirun(sweep, "search.max_iterations=4", "logger=none"), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while len(_rows(job)) < 1:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the job recorded no iteration in time"
            time.sleep(0.2)
        assert len(_rows(job)) < 4
        (first,) = [e for e in _events(job) if e["event"] == "start"]
        os.kill(first["pid"], signal.SIGUSR2)  # what Slurm sends signal_delay_s before the time limit
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    rows = _rows(job)
    assert [r[0] for r in rows] == [1, 2, 3, 4], rows  # contiguous, each iteration once
    starts = [e for e in _events(job) if e["event"] == "start"]
    assert len(starts) == 2 and not starts[0]["resumed"] and starts[1]["resumed"]
    assert starts[1]["pid"] != starts[0]["pid"] and starts[1]["done"] >= 1
    done = [(e["candidate"], e["kind"]) for e in _events(job) if e["event"] == "evaluate" and e["phase"] == "done"]
    assert len(done) == len(set(done)), "a finished evaluation was repeated after the requeue"
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Calling checkpoint method" in logs and "Requeued job" in logs
    assert not [p for p in sweep.iterdir() if p.is_dir() and p.name not in ("0", ".submitit")]


def _sbatch(monkeypatch, *overrides: str) -> str:
    """The sbatch script the Slurm launcher would submit, built with the launcher's own mapping of
    its config onto submitit (no Slurm needed)."""
    import submitit
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from avo import config as avo_config

    avo_config.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=smoke", *overrides], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert params.pop("_target_").endswith("SlurmLauncher")
    params.pop("submitit_folder")
    params.pop("name")
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun is there"
    executor = submitit.AutoExecutor(folder="/tmp/avo-sbatch-test", cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("python -m submitit.core._submit X", "uid")


def test_slurm_b200_preset_makes_a_one_gpu_requeueable_job(monkeypatch):
    text = _sbatch(monkeypatch, "hydra/launcher=slurm_b200", "hydra.launcher.partition=gpu", "hydra.launcher.account=proj",
                   "hydra.launcher.constraint=b200", "hydra.launcher.timeout_min=240",
                   "hydra.launcher.setup=[module load cuda]")
    for line in ("--partition=gpu", "--account=proj", "--constraint=b200", "--gpus-per-node=1",
                 "--time=240", "--signal=USR2@300", "--cpus-per-task=16"):
        assert f"#SBATCH {line}" in text, line
    assert "module load cuda" in text


def test_slurm_b200_node_preset_takes_the_whole_node(monkeypatch):
    text = _sbatch(monkeypatch, "hydra/launcher=slurm_b200_node")
    for line in ("--gpus-per-node=8", "--exclusive", "--mem=0GB", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}" in text, line
