"""A search told to stop (Slurm's SIGTERM on requeue or preemption, SIGUSR2 before a time limit)
while an evaluation is in flight: nothing of that iteration is recorded, no crash row appears, the
process exits 0, and the same command resumes and finishes without losing or repeating an
iteration. Slurm signals every process of a job, so the evaluator's children get it too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avo.archive import open_run
from avo.logging.base import MultiLogger

ROOT = Path(__file__).resolve().parents[1]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _search(run: Path, iterations: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "avo", "+experiment=smoke", "evaluator.repeats=5", f"search.max_iterations={iterations}",
                             "logger=none", f"hydra.run.dir={run}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _in_flight(run: Path, candidate: int) -> bool:
    try:
        lines = (run / "events.jsonl").read_text().splitlines()
    except OSError:
        return False
    events = [json.loads(x) for x in lines if x.strip()]
    return any(e.get("event") == "evaluate" and e.get("candidate") == candidate and e.get("phase") == "start"
               for e in events)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2], ids=lambda s: s.name)
def test_a_stopped_search_records_nothing_in_flight_and_resumes(tmp_path, sig):
    run = tmp_path / "run"
    proc = _search(run, 3)
    end = time.monotonic() + 600  # a hang-catcher, not a timing claim
    while not _in_flight(run, 2) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    time.sleep(1.0)  # well inside the evaluation: the judge and its workers are running
    family = _descendants(proc.pid)
    assert len(family) > 1
    for pid in family:  # as Slurm does: every process of the job
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert f"stopped by {sig.name}" in out, out[-2000:]
    with open_run(run) as arch:
        rows = arch.candidates()
    assert [r.id for r in rows] == [1] and all(r.status != "crash" for r in rows), [(r.id, r.status) for r in rows]
    assert not (run / "results" / "0002" / "eval.json").exists()
    again = _search(run, 3)
    out, err = again.communicate(timeout=900)
    assert again.returncode == 0, err[-3000:]
    with open_run(run) as arch:
        rows = arch.candidates()
    assert [r.id for r in rows] == [1, 2, 3] and all(r.status != "crash" for r in rows)


def test_a_logger_that_dies_is_dropped_and_the_run_goes_on(caplog):
    class Dead:
        def iteration(self, m):
            raise ConnectionResetError("wandb service gone")

    class Alive:
        seen = []

        def iteration(self, m):
            self.seen.append(m)

    alive = Alive()
    multi = MultiLogger([Dead(), alive])
    multi.iteration({"i": 1})
    multi.iteration({"i": 2})
    assert alive.seen == [{"i": 1}, {"i": 2}] and len(multi.loggers) == 1
    assert "ConnectionResetError" in caplog.text


def test_a_signal_inside_a_critical_block_still_reaches_the_chained_handler():
    # submitit's USR2 handler checkpoints and requeues the job: a signal that arrived while the
    # engine recorded an iteration (a critical block) used to skip it, and the job just ended.
    import os
    import signal as sig

    from avo import stopping

    calls = []
    old = sig.signal(sig.SIGUSR2, lambda signum, frame: calls.append(signum))
    stopping.reset()
    try:
        with pytest.raises(stopping.SearchStopped):
            with stopping.handlers():
                with stopping.critical():
                    os.kill(os.getpid(), sig.SIGUSR2)
                    for _ in range(1000):  # the handler runs between bytecodes of this thread
                        if stopping.requested.is_set():
                            break
                    assert stopping.requested.is_set() and calls == []  # deferred, not lost
                assert False, "the critical block's end should have raised"
        assert calls == [sig.SIGUSR2]
    finally:
        sig.signal(sig.SIGUSR2, old)
        stopping.reset()
