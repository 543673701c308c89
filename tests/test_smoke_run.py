"""The issue's done-when, literally: `python -m avo +experiment=smoke` on a CPU, offline, then resumed."""

import os
import re
import subprocess
import sys
from pathlib import Path

from avo.archive import Archive
from avo.lineage import Lineage

ROOT = Path(__file__).resolve().parents[1]


def _run(run_dir, iterations):
    env = {**os.environ, "WANDB_MODE": "offline", "CUDA_VISIBLE_DEVICES": ""}  # no GPU, no network
    env.pop("WANDB_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "avo", "+experiment=smoke", f"search.max_iterations={iterations}",
                           f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def _shape(line: str, run_dir) -> str:
    """A console line with what varies between runs taken out: numbers, the run dir, knob names."""
    line = line.replace(str(run_dir), "RUN").replace("/tmp/s1", "RUN")
    line = re.sub(r"block_[mn]", "KNOB", line)
    line = re.sub(r"[+-]?\d+(\.\d+)?(e[+-]?\d+)?", "#", line)
    return " ".join(line.split())


def _readme_capture() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("$ python -m avo +experiment=smoke hydra.run.dir=/tmp/s1\n", 1)[1]
    return [x for x in block.split("\n$ ", 1)[0].splitlines() if x.strip()]


def check_readme_capture(stdout: str, run_dir) -> None:
    """The README's capture of a smoke run is what a smoke run prints today, kind of line by kind
    of line: which verdicts occur (and so whether a confirmation runs) is this machine's noise, how
    each kind of line reads is not."""
    real = {_shape(x, run_dir) for x in stdout.splitlines() if x.strip()}
    for want in dict.fromkeys(_shape(x, run_dir) for x in _readme_capture()):
        if want.startswith("[#/#]"):
            verdict = " ".join(want.split()[:2])
            got = {s for s in real if s.startswith(verdict + " ")}
            assert got <= {want}, (want, got)
        elif not want.endswith("evaluating the confirm"):
            assert want in real, f"no line like the README's {want!r} in:\n" + "\n".join(sorted(real))
    assert any(s.startswith("[#/#]") for s in real)


def test_smoke_experiment_runs_and_resumes(tmp_path):
    run_dir = tmp_path / "smoke"
    first = _run(run_dir, 4)
    assert first.returncode == 0, first.stderr[-3000:]
    archive = Archive(run_dir)
    assert archive.count() == 4
    lineage = Lineage.of_run(run_dir).versions()
    assert len(lineage) >= 1 and lineage[0].subject == "seed: kernels/reference/chunked.py"
    assert float(lineage[0].trailers["Score"]) > 0
    assert "[4/4]" in first.stdout and "stopped: search.max_iterations=4" in first.stdout
    check_readme_capture(first.stdout, run_dir)
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    wandb_id = (run_dir / "wandb_id").read_text().strip()
    assert len(runs) == 1 and list(runs[0].glob(f"run-{wandb_id}.wandb"))
    for name in ("metrics.jsonl", "events.jsonl", "console.log", "results/0000/eval.json",
                 "results/0004/eval.json", "candidates/0004/kernel.py", ".hydra/config.yaml"):
        assert (run_dir / name).is_file(), name

    second = _run(run_dir, 7)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming" in second.stdout and "[5/7]" in second.stdout
    archive = Archive(run_dir)
    assert [r.id for r in archive.candidates()] == list(range(1, 8))
    assert (run_dir / "wandb_id").read_text().strip() == wandb_id  # the same W&B run, continued
    assert len(list((run_dir / "wandb").glob(f"offline-run-*/run-{wandb_id}.wandb"))) == 2
    # Every candidate was timed against its incumbent, and acceptance followed the rule on the
    # recorded numbers. How fast the versions are is this loaded CPU's business, not asserted.
    rows = archive.candidates()
    # A candidate screened out by its score ("slower") gets no paired run; every other ok one does.
    assert all(r.incumbent_ratio is not None for r in rows if r.status == "ok" and r.verdict != "slower"), [
        (r.id, r.verdict, r.incumbent_ratio) for r in rows]
    assert all(r.incumbent_ratio > 1 + max(0.005, r.incumbent_ratio_spread) for r in rows if r.accepted)
    # ... and the rule is the whole story: a confirmation that beat its margin was accepted (a
    # confirmation run without its own re-verification was once refused every time).
    assert all(r.accepted for r in rows
               if r.incumbent_ratio is not None and r.incumbent_ratio > 1 + max(0.005, r.incumbent_ratio_spread or 0))
