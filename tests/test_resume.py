"""Resume: a run killed at any point continues from its archive, re-evaluating nothing finished."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avo.archive import Archive
from avo.lineage import Lineage
from avo.search.budgets import Budgets
from avo.search.engine import EVENTS, Engine
from avo.search.fakes import KERNEL, FakeEvaluator, ScriptedOperator
from avo.search.seed import Seed
from avo.search.strategies import AvoStrategy
from run_checks import check_consistent, events

ROOT = Path(__file__).resolve().parents[1]
STEPS = [{"a": 2}, {"b": 2}, {"a": 4}, {"b": 4}, {"a": 8}, {"b": 8}]  # each one is an improvement


class Boom(BaseException):
    """Stands for kill -9: nothing in the engine catches it."""


def _engine(run_dir, operator=None, evaluate=None, max_iterations=5):
    return Engine(run_dir, strategy=AvoStrategy(0.01, 3), operator=operator or ScriptedOperator(STEPS),
                  evaluate=evaluate or FakeEvaluator(), budgets=Budgets(max_iterations), info={"name": "t"})





def _evaluator_failing(kind, at=3):
    fake = FakeEvaluator()

    def evaluate(kernel, **kw):
        if f"{at:04d}" in str(kernel) and (kind == "confirm") == (kw.get("incumbent") is not None):
            raise Boom
        return fake(kernel, **kw)

    return evaluate


def _operator_failing(at=3):
    op = ScriptedOperator(STEPS)
    real = op.propose

    def propose(ctx):
        if ctx.iteration == at:
            raise Boom
        return real(ctx)

    op.propose = propose
    return op


@pytest.mark.parametrize("where", ["propose", "evaluate", "confirm", "after-commit"])
def test_crash_anywhere_then_resume(tmp_path, monkeypatch, where):
    first = {"propose": dict(operator=_operator_failing()),
             "evaluate": dict(evaluate=_evaluator_failing("candidate")),
             "confirm": dict(evaluate=_evaluator_failing("confirm"))}.get(where, {})
    if where == "after-commit":
        real = Archive.record

        def record(self, cand, version=None, meta=None):
            if cand.id == 3:
                assert Lineage.of_run(tmp_path).find_candidate(3) is not None  # committed already
                raise Boom
            return real(self, cand, version, meta)

        monkeypatch.setattr(Archive, "record", record)
    with pytest.raises(Boom):
        _engine(tmp_path, **first).run(Seed(KERNEL, "s"))
    monkeypatch.undo()
    assert Archive(tmp_path).count() == 2

    fake = FakeEvaluator()
    out = _engine(tmp_path, evaluate=fake).run(Seed(KERNEL, "never read on resume"))
    assert out.resumed and out.iterations == 5
    rows = check_consistent(tmp_path, 5)
    assert all(r.accepted for r in rows)
    evaluated = {Path(c["kernel"]).parent.name for c in fake.calls}
    assert "0001" not in evaluated and "0002" not in evaluated
    if where == "after-commit":  # its evaluations were finished: nothing of iteration 3 ran again
        assert "0003" not in evaluated


def test_raising_max_iterations_extends_the_run(tmp_path):
    assert _engine(tmp_path, max_iterations=2).run(Seed(KERNEL, "s")).iterations == 2
    again = _engine(tmp_path, max_iterations=2).run(Seed(KERNEL, "s"))
    assert again.iterations == 2 and again.resumed  # nothing left to do
    assert _engine(tmp_path, max_iterations=4).run(Seed(KERNEL, "s")).iterations == 4
    check_consistent(tmp_path, 4)


# -- the real thing: `python -m avo` killed with SIGKILL mid-evaluation, then re-run --------------

def _cli(run_dir, iterations):
    return [sys.executable, "-m", "avo", "+experiment=smoke", "evaluator.repeats=5", f"hydra.run.dir={run_dir}",
            f"search.max_iterations={iterations}", "logger=none"]


def _wait_for_evaluation_in_flight(proc, run_dir, timeout=240):
    """Until the run has finished >= 1 iteration and is inside a later evaluation."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "the run ended before it could be killed"
        path = Path(run_dir) / EVENTS
        if path.exists():
            events = [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]
            recorded = [e for e in events if e["event"] == "recorded"]
            last = events[-1]
            if recorded and last["event"] == "evaluate" and last["phase"] == "start":
                time.sleep(0.3)  # well inside the child's evaluation
                return last
        time.sleep(0.05)
    raise AssertionError("no evaluation in flight in time")


def test_kill_9_mid_iteration_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_cli(run_dir, 3), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        in_flight = _wait_for_evaluation_in_flight(proc, run_dir)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    before = Archive(run_dir).count()
    assert 1 <= before < 3 and in_flight["candidate"] == before + 1

    done = subprocess.run(_cli(run_dir, 3), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stdout
    rows = check_consistent(run_dir, 3)
    assert rows[0].status == "ok"
    evs = events(run_dir)
    pids = list(dict.fromkeys(e["pid"] for e in evs))
    assert len(pids) == 2
    # The killed evaluation started in the first process and was finished only by the second.
    key = (in_flight["candidate"], in_flight["kind"])
    finished = [e["pid"] for e in evs if e["event"] == "evaluate" and e["phase"] == "done"
                and (e["candidate"], e["kind"]) == key]
    assert finished == [pids[1]]
    assert not (run_dir / "wandb").exists()  # logger=none logs nothing to W&B


def test_one_search_per_run_dir_and_stale_git_locks_are_cleared(tmp_path):
    import subprocess
    import sys

    from avo.config import ConfigError
    from avo.lineage import Lineage
    from avo.search.run import exclusive

    with exclusive(tmp_path):
        # a second process on the same run dir is refused with one clear line
        probe = ("import sys\nfrom avo.search.run import exclusive\nfrom avo.config import ConfigError\n"
                 "try:\n    with exclusive(sys.argv[1]): print('got it')\n"
                 "except ConfigError as e: print('refused:', e)\n")
        out = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True).stdout
        assert out.startswith("refused:") and f"pid {__import__('os').getpid()}" in out
        with pytest.raises(ConfigError, match="already running"):
            with exclusive(tmp_path):
                pass
    # released when the holder is done (the kernel also releases it when a holder is killed)
    lineage = Lineage.of_run(tmp_path)
    lineage.init()
    (lineage.path / ".git" / "index.lock").write_text("")
    with exclusive(tmp_path):
        assert not (lineage.path / ".git" / "index.lock").exists()
        sha = lineage.commit("x = 1\n", "works after a stale lock", {"Candidate": 0})
    assert sha and lineage.head() == sha


def test_a_refused_start_or_a_dry_run_leaves_the_runs_hydra_config_as_it_was(tmp_path):
    run = tmp_path / "run"
    first = subprocess.run(_cli(run, 0), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    config = (run / ".hydra" / "config.yaml").read_text()
    overrides = (run / ".hydra" / "overrides.yaml").read_text()
    # The kept record is made from the process's own config, and is what Hydra wrote for it.
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        assert (run / ".hydra-run" / name).read_text() == (run / ".hydra" / name).read_text(), name
    refused = subprocess.run(_cli(run, 0) + ["evaluator.repeats=7"], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "evaluator.repeats" in refused.stderr, refused.stderr
    plan = subprocess.run(_cli(run, 0) + ["evaluator.repeats=9", "dry_run=true"], capture_output=True, text=True,
                          timeout=300)
    assert plan.returncode == 0, plan.stderr
    assert (run / ".hydra" / "config.yaml").read_text() == config
    assert (run / ".hydra" / "overrides.yaml").read_text() == overrides


def test_the_kept_hydra_record_is_the_starts_own_not_what_a_later_start_wrote(tmp_path):
    """A second start in the same run dir rewrites .hydra/ before it is refused; the first one,
    still getting ready, must keep its own files, not copy those."""
    from avo.hydra_record import KEPT_HYDRA, keep_hydra

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("evaluator:\n  repeats: 7\n")  # the refused start's
    own = {"config.yaml": "evaluator:\n  repeats: 15\n", "overrides.yaml": "[]\n", "hydra.yaml": "hydra: {}\n"}
    keep_hydra(tmp_path, own)
    for d in (KEPT_HYDRA, ".hydra"):
        assert {f.name: f.read_text() for f in (tmp_path / d).iterdir()} == own, d


@pytest.mark.parametrize("damage", ["garbage", "empty"])
def test_a_lost_archive_is_rebuilt_from_the_signed_records_and_says_so(tmp_path, damage):
    run = tmp_path / "run"
    first = subprocess.run(_cli(run, 2), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    with Archive(run) as a:
        before = [(c.id, c.verdict, c.score) for c in a.candidates()]
    for suffix in ("-wal", "-shm"):
        (run / f"archive.sqlite{suffix}").unlink(missing_ok=True)
    (run / "archive.sqlite").write_bytes(os.urandom(4096) if damage == "garbage" else b"")
    n_events = len((run / EVENTS).read_text().splitlines())
    again = subprocess.run(_cli(run, 3), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    said = [line for line in again.stdout.splitlines() if line.startswith("avo: the run's archive")]
    assert said and "rebuilding it from the signed records in results/ (2 iteration(s)" in said[0], again.stdout
    if damage == "garbage":
        assert "damaged" in said[0] and len(list(run.glob("archive.sqlite.damaged-*"))) == 1
    with Archive(run) as a:
        after = [(c.id, c.verdict, c.score) for c in a.candidates()]
    assert after[:2] == before and len(after) == 3
    events = [json.loads(x) for x in (run / EVENTS).read_text().splitlines()[n_events:]]
    assert any(e["event"] == "archive-rebuilt" for e in events)
    # The two recorded iterations were replayed from their signed results, not evaluated again,
    # nor logged again; and the run's recorded settings and time came back with them.
    assert {e["candidate"] for e in events if e["event"] == "evaluate"} == {3}
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert [m["iteration"] for m in metrics if m.get("event") == "iteration"] == [1, 2, 3]
    with Archive(run) as a:
        assert a.get_meta("results_config") is not None and a.get_meta("elapsed_s") > 0
