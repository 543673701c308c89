"""The issue's done-when commands, offline: the smoke experiment driven by the scripted model
(agent=avo) and by the stand-in external agent (agent=cli), with the real evaluator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from avo.archive import open_run
from avo.operators.transcript import read

ROOT = Path(__file__).resolve().parents[1]


def _run(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "avo", "+experiment=smoke", "evaluator.repeats=5", "search.max_iterations=2", "logger=none",
           f"hydra.run.dir={run_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _check(run_dir: Path, operator: str) -> list[dict]:
    with open_run(run_dir) as arch:
        rows = arch.candidates()
    assert [r.operator for r in rows] == [operator, operator]
    transcripts = sorted(run_dir.glob("candidates/*/transcript.jsonl"))
    assert len(transcripts) == 2
    events = [e for t in transcripts for e in read(t)]
    evaluated = [e for e in events if e["event"] == "tool_result" and e["evaluated"]]
    assert any("status=ok" in e["content"] and e["name"] == "test" for e in evaluated)
    assert any("suite score" in e["content"] and e["name"] == "bench" for e in evaluated)
    assert all(json.loads((t.parent / "proposal.json").read_text())["transcript"] == str(t) for t in transcripts)
    return rows


@pytest.mark.slow
def test_smoke_with_the_scripted_model(tmp_path):
    proc = _run(tmp_path / "run", "agent=avo", "model=scripted")
    rows = _check(tmp_path / "run", "avo")
    # The scripted edit applies to every version (it doubles the tiles again); when the first one
    # was not accepted (CPU timing noise), the second repeats it on the same parent: a duplicate.
    assert rows[0].status == "ok", (rows[0].verdict, rows[0].message)
    assert rows[1].status == "ok" or (rows[1].status == "duplicate" and not rows[0].accepted)
    assert "completion() model=" not in proc.stdout + proc.stderr  # litellm's per-call chatter is off


@pytest.mark.slow
def test_smoke_with_the_cli_stand_in(tmp_path):
    _run(tmp_path / "run", "agent=cli", "agent.command='{python} {repo}/tests/data/cli_standin.py {prompt_file}'")
    rows = _check(tmp_path / "run", "cli")
    assert rows[0].status == "ok" and rows[0].rationale.startswith("Double both tile sizes")
    assert rows[1].status == "ok" or (rows[1].status == "duplicate" and not rows[0].accepted)
