"""The search: acceptance rule, supervisor, budgets, and the engine end to end with a fake evaluator."""

from types import SimpleNamespace as NS

import pytest

from avo.evaluate.result import EvalResult
from avo.lineage import Lineage
from avo.operators.knob import KnobOperator, parse_knobs
from avo.search import acceptance, results, supervisor
from avo.search.budgets import Budgets, Usage, exhausted, remaining
from avo.search.engine import Engine, cand_dir
from avo.search.fakes import KERNEL, FakeEvaluator, ScriptedOperator
from avo.search.seed import Seed
from avo.search.strategies import AvoStrategy, GreedyStrategy


def ok(score=2.0, ratio=None, spread=None):
    return EvalResult(status="ok", score=score, incumbent_ratio=ratio, incumbent_ratio_spread=spread)


# -- acceptance ----------------------------------------------------------------------------------

def test_screen_needs_correct_and_faster():
    bad = EvalResult(status="incorrect", stage="correctness", message="max error 0.3")
    assert acceptance.screen(bad, 1.0).label == "failed:correctness"
    assert acceptance.screen(ok(0.85), 1.0).label == "slower"  # far below the best: not worth confirming
    v = acceptance.screen(ok(0.95), 1.0)  # within drift of the best: the interleaved run decides
    assert v.passed_screen and not v.accepted
    assert acceptance.screen(ok(0.95), 1.0, slack=0.0).label == "slower"


def test_confirmation_must_beat_noise_and_min_gain():
    assert acceptance.confirm(ok(ratio=1.05, spread=0.02), min_gain=0.01).accepted
    # The measured spread, not min_gain, is the bar when it is larger.
    v = acceptance.confirm(ok(ratio=1.05, spread=0.08), min_gain=0.01)
    assert not v.accepted and v.label == "not-confirmed"
    assert not acceptance.confirm(ok(ratio=1.004, spread=0.0), min_gain=0.005).accepted
    assert acceptance.confirm(ok(ratio=1.006, spread=None), min_gain=0.005).accepted
    assert acceptance.confirm(ok(ratio=None), 0.0).label == "confirm-failed:benchmark"
    crash = EvalResult(status="crash", stage="benchmark", message="killed")
    assert acceptance.confirm(crash, 0.0).label == "confirm-failed:benchmark"


def test_greedy_rule():
    assert acceptance.greedy(ok(1.1), 1.0, 0.05).accepted
    assert not acceptance.greedy(ok(1.04), 1.0, 0.05).accepted
    assert acceptance.greedy(EvalResult(status="timeout", stage="compile"), 1.0, 0.0).label == "failed:compile"


# -- supervisor ----------------------------------------------------------------------------------

def row(i, accepted=False, intervention=None, parent=0):
    return NS(id=i, accepted=accepted, intervention=intervention, parent=parent, rationale=f"try {i}",
              verdict="accepted" if accepted else "slower")


V = [NS(version=0, candidate=0, score=1.0), NS(version=1, candidate=2, score=2.0), NS(version=2, candidate=5, score=3.0)]


def test_supervisor_waits_for_patience_then_reviews():
    hist = [row(1), row(2, accepted=True), row(3), row(4)]
    assert supervisor.supervise(hist, V, patience=3) is None
    step = supervisor.supervise(hist + [row(5)], V, patience=3)
    assert step.kind == "review" and step.restart_from is None
    assert "3 attempts" in step.directive and "try 5" in step.directive
    assert supervisor.supervise(hist + [row(5)], V, patience=0) is None  # disabled


def test_supervisor_alternates_with_restarts_walking_back():
    # Patience counts the iterations since the last acceptance, from the last intervention on.
    hist = [row(1, accepted=True), row(2), row(3), row(4, intervention="review")]
    assert supervisor.supervise(hist, V, patience=2) is None
    hist.append(row(5))
    step = supervisor.supervise(hist, V, patience=2)
    assert step.kind == "restart" and step.restart_from == 2  # the version before the best
    hist.append(row(6, intervention="restart", parent=2))
    assert supervisor.choose_parent(hist, V) == 2  # the restart stays in force
    assert supervisor.supervise(hist, V, patience=2) is None
    hist.append(row(7, parent=2))
    assert supervisor.choose_parent(hist, V) == 2
    assert supervisor.supervise(hist, V, patience=2).kind == "review"
    hist += [row(8, intervention="review"), row(9)]
    assert supervisor.choose_parent(hist, V) == 5  # a review goes back to the best
    step = supervisor.supervise(hist, V, patience=2)
    assert step.kind == "restart" and step.restart_from == 0  # second restart: further back
    hist.append(row(10, accepted=True))
    assert supervisor.choose_parent(hist, V) == 5 and supervisor.supervise(hist, V, 2) is None


def test_supervisor_reviews_when_there_is_nothing_earlier():
    hist = [row(1), row(2, intervention="review"), row(3), row(4)]
    assert supervisor.supervise(hist, V[:1], patience=3).kind == "review"


def test_supervisor_template_fields():
    t = "Kind {kind}; streak {streak}; from {restart_from}; {instruction} {unknown} `{{code}}`"
    step = supervisor.supervise([row(1), row(2, intervention="review"), row(3)], V, 2, template=t)
    assert step.directive.startswith("Kind restart; streak 2; from 2; The last 2 attempts")
    assert "{unknown}" in step.directive
    assert supervisor.supervise([row(1)], V, 1, template="a { b").directive == "a { b"


# -- budgets -------------------------------------------------------------------------------------

def test_budgets():
    b = Budgets(10, max_wall_time_s=100, max_cost_usd=2.0)
    assert exhausted(b, Usage(3, 50, 1.0)) is None
    assert "max_iterations" in exhausted(b, Usage(10, 0, 0))
    assert "max_wall_time_s" in exhausted(b, Usage(3, 100, 0))
    assert "max_cost_usd" in exhausted(b, Usage(3, 0, 2.5))
    assert remaining(b, Usage(3, 50, 0.5)) == "7 it, 50 s, $1.50 left"


# -- the engine ----------------------------------------------------------------------------------

def engine(tmp_path, operator=None, strategy=None, evaluate=None, **budget):
    budgets = Budgets(**{"max_iterations": 5, **budget})
    return Engine(tmp_path, strategy=strategy or AvoStrategy(0.01, 3), operator=operator or KnobOperator(),
                  evaluate=evaluate or FakeEvaluator(), budgets=budgets, seed=0, info={"name": "test"})


def test_engine_improves_and_records_everything(tmp_path):
    fake = FakeEvaluator()
    out = engine(tmp_path, evaluate=fake, max_iterations=6).run(Seed(KERNEL, "fake seed"))
    e = engine(tmp_path)
    rows = e.archive.candidates()
    assert [r.id for r in rows] == [1, 2, 3, 4, 5, 6] and out.iterations == 6
    accepted = [r for r in rows if r.accepted]
    assert accepted and out.accepted == len(accepted)
    lineage = Lineage.of_run(tmp_path).versions()
    assert len(lineage) == 1 + len(accepted) == len(e.archive.versions())
    assert [v.sha for v in lineage] == [v.sha for v in e.archive.versions()]
    assert lineage[0].subject == "seed: fake seed" and lineage[0].candidate == 0
    best = 0.0
    for r, v in zip(accepted, lineage[1:]):
        assert r.score > best and r.incumbent_ratio > 1.01  # each version beat the one before
        best = r.score
        assert v.candidate == r.id and v.trailers["Operator"] == "knob" and float(v.trailers["Score"]) == pytest.approx(r.score, rel=1e-5)
        assert "Speedup-vs-cudnn" in v.trailers and v.subject == r.rationale
        assert r.lineage_sha == v.sha
    for r in rows:
        d, saved = cand_dir(tmp_path, r.id), results.path(tmp_path, r.id, "eval")
        record = results.read(saved, key=results.secret(tmp_path), kind="candidate", candidate=r.id)
        assert (d / "kernel.py").is_file() and record.result["status"] == r.status
        assert record.kernel_sha256 == r.source_hash and r.result_path == f"results/{r.id:04d}/eval.json"
        assert r.diff.startswith("---") and r.source_hash and r.metrics and r.eval_s is not None
        assert saved.with_name("confirm.json").is_file() == (r.verdict in ("accepted", "not-confirmed"))
        assert not (d / "eval.json").exists()  # nothing the engine keeps is in the candidate's directory
    # Only screened candidates were confirmed, interleaved against the incumbent of the moment.
    confirms = [c for c in fake.calls if c["incumbent"]]
    assert len(confirms) == sum(r.verdict in ("accepted", "not-confirmed") for r in rows)
    # The confirmation decides, so it re-verifies every shape after its own timing too.
    assert all(c["stages"] == ("compile", "correctness", "benchmark", "reverify") for c in confirms)
    assert not (tmp_path / "metrics.jsonl").exists()  # no logger was given: nothing logged


class Recorder:
    def __init__(self):
        self.events = []

    def __getattr__(self, name):
        return lambda *args: self.events.append((name, args))


def test_logging_of_iterations_versions_and_lineage(tmp_path):
    from avo.logging.base import MultiLogger
    from avo.logging.jsonl import JsonlLogger, read

    rec = Recorder()
    e = engine(tmp_path, operator=ScriptedOperator([{"a": 2}, "broken", {"b": 2}]), max_iterations=3)
    e.logger = MultiLogger([rec, JsonlLogger(tmp_path)])
    e.run(Seed(KERNEL, "s"))
    names = [n for n, _ in rec.events]
    assert names[0] == "start" and names[-1] == "finish" and names.count("iteration") == 3
    assert names.count("version") == 3 and names.count("lineage") == 3  # seed + 2 accepted
    its = [args[0] for n, args in rec.events if n == "iteration"]
    assert [m["iteration"] for m in its] == [1, 2, 3]
    last = its[-1]
    for key in ("candidate/score", "best/score", "candidate/speedup_vs_cudnn", "best/speedup_vs_cudnn",
                "count/ok", "count/compile_error", "count/accepted", "tokens", "cost_usd", "total/cost_usd",
                "budget_left", "verdict", "elapsed_s"):
        assert key in last, key
    assert last["count/ok"] == 2 and last["count/compile_error"] == 1 and last["best/score"] == last["candidate/score"]
    rows, step = [args for n, args in rec.events if n == "lineage"][-1]
    assert [r["candidate"] for r in rows] == [0, 1, 3] and step == 3
    version, path = [args for n, args in rec.events if n == "version"][-1]
    assert version["candidate"] == 3 and path.read_text() == Lineage.of_run(tmp_path).show()
    assert [m["iteration"] for m in read(tmp_path, "iteration")] == [1, 2, 3]
    assert read(tmp_path, "finish")[0]["stop_reason"].startswith("search.max_iterations=3")


def test_failures_operator_errors_and_duplicates(tmp_path):
    fake = FakeEvaluator()
    op = ScriptedOperator(["broken", None, "same", {"a": 2}, {"a": 2}])
    engine(tmp_path, operator=op, evaluate=fake).run(Seed(KERNEL, "seed"))
    rows = engine(tmp_path).archive.candidates()
    assert [(r.status, r.verdict) for r in rows] == [
        ("compile_error", "failed:compile"), ("operator_error", "operator-error"), ("duplicate", "duplicate"),
        ("ok", "accepted"), ("duplicate", "duplicate")]
    assert rows[1].message == "scripted failure" and rows[1].source_hash is None
    assert "candidate 0" in rows[2].message and "candidate 4" in rows[4].message
    # seed, broken, a=2 and its confirmation: duplicates are never evaluated again
    assert len(fake.calls) == 4


def test_supervisor_intervenes_in_the_engine(tmp_path):
    # One improvement, then nothing helps: review after 2 misses, then restart from the seed.
    op = ScriptedOperator([{"a": 2}] + [{"b": 1}] * 8)
    engine(tmp_path, operator=op, strategy=AvoStrategy(0.01, 2), max_iterations=8).run(Seed(KERNEL, "seed"))
    rows = engine(tmp_path).archive.candidates()
    assert [r.intervention for r in rows] == [None, None, None, "review", None, "restart", None, "review"]
    assert [r.parent for r in rows] == [0, 1, 1, 1, 1, 0, 0, 1]
    seen = {s["iteration"]: s for s in op.seen}
    assert seen[4]["directive"] == rows[3].directive and "Step back" in rows[3].directive
    assert seen[6]["parent"] == "0" and "v0" in seen[6]["directive"]
    assert seen[5]["directive"] is None


def test_greedy_never_confirms(tmp_path):
    fake = FakeEvaluator()
    engine(tmp_path, strategy=GreedyStrategy(0.0), evaluate=fake, max_iterations=4).run(Seed(KERNEL, "s"))
    assert not any(c["incumbent"] for c in fake.calls)
    assert any(r.accepted for r in engine(tmp_path).archive.candidates())


def test_cost_budget_stops_the_run(tmp_path):
    op = ScriptedOperator([{"a": 2}, {"b": 2}, {"a": 4}, {"b": 4}], cost_usd=0.4, tokens=100)
    out = engine(tmp_path, operator=op, max_iterations=10, max_cost_usd=1.0).run(Seed(KERNEL, "s"))
    assert out.iterations == 3 and "max_cost_usd" in out.stop_reason
    assert engine(tmp_path).archive.totals()["tokens"] == 300


def test_wall_time_budget_counts_across_resumes(tmp_path):
    now = [0.0]

    def slow_eval(*args, **kwargs):
        now[0] += 100.0
        return FakeEvaluator()(*args, **kwargs)

    def make():
        e = engine(tmp_path, evaluate=slow_eval, max_iterations=10, max_wall_time_s=250)
        e.clock = lambda: now[0]
        e._t0 = now[0]
        return e

    out = make().run(Seed(KERNEL, "s"))  # seed 100 s + iteration 1 (eval + confirm) 200 s
    assert out.iterations == 1 and "max_wall_time_s" in out.stop_reason
    again = make().run(Seed(KERNEL, "s"))
    assert again.iterations == 1 and again.resumed  # the elapsed time survived the restart


def test_seed_that_fails_is_a_clear_error(tmp_path):
    from avo.config import ConfigError

    with pytest.raises(ConfigError, match="seed kernel .* does not pass the evaluator"):
        engine(tmp_path).run(Seed(KERNEL + "raise_compile_error = 1\n", "broken seed"))
    # Fixing the seed and re-running starts the run properly (nothing stale is re-used).
    assert engine(tmp_path, max_iterations=1).run(Seed(KERNEL, "fixed seed")).iterations == 1
    assert Lineage.of_run(tmp_path).versions()[0].subject == "seed: fixed seed"


def test_knob_operator_search_is_reproducible(tmp_path):
    a = engine(tmp_path / "a", max_iterations=5)
    a.run(Seed(KERNEL, "s"))
    b = engine(tmp_path / "b", max_iterations=5)
    b.run(Seed(KERNEL, "s"))
    key = [(r.source_hash, r.verdict) for r in a.archive.candidates()]
    assert key == [(r.source_hash, r.verdict) for r in b.archive.candidates()]
    assert len({h for h, _ in key}) == 5  # the knob operator never re-proposed a configuration
    assert parse_knobs(Lineage.of_run(tmp_path / "a").show()).values != {"a": 1, "b": 1}


def test_a_fatal_operator_error_stops_the_search_at_once_and_resume_redoes_the_iteration(tmp_path):
    from avo.operators.base import FatalOperatorError

    op = ScriptedOperator([{"a": 2}, "fatal", {"b": 2}])
    with pytest.raises(FatalOperatorError, match="credentials"):
        engine(tmp_path, operator=op, max_iterations=5).run(Seed(KERNEL, "fake seed"))
    e = engine(tmp_path)
    assert [r.id for r in e.archive.candidates()] == [1]  # iteration 2 is not recorded, nor any later
    assert len(op.seen) == 2
    fixed = ScriptedOperator([{"a": 2}, {"b": 2}, {"a": 3}])
    out = engine(tmp_path, operator=fixed, max_iterations=3).run(Seed(KERNEL, "fake seed"))
    assert out.iterations == 3 and [s["iteration"] for s in fixed.seen] == [2, 3]


def test_iterations_that_all_fail_alike_are_named():
    from avo.search.budgets import same_failures

    missing = ("operator_error", "agent=cli: command 'claude' not found")
    assert same_failures([missing] * 4, 5) is None  # not yet
    why = same_failures([("ok", None)] + [missing] * 5, 5)
    assert "last 5 iterations all failed the same way" in why and "'claude' not found" in why
    # Which candidate said it does not make failures differ; what they measured does.
    paths = [("compile_error", f"candidates/{i:04d}/kernel.py:3: SyntaxError") for i in range(1, 4)]
    assert same_failures(paths, 3) is not None
    errors = [("incorrect", f"max error {e} above tolerance") for e in (0.5, 0.7, 0.9)]
    assert same_failures(errors, 3) is None
    assert same_failures([missing, ("duplicate", "same source"), missing], 3) is None
    assert same_failures([missing] * 9, 0) is None  # 0 disables


def test_a_search_whose_iterations_all_fail_alike_stops_and_resumes_afresh(tmp_path):
    from avo.errors import SearchStuck

    stuck = ScriptedOperator([None])  # an OperatorError every time
    with pytest.raises(SearchStuck, match="last 3 iterations all failed the same way .*scripted failure"):
        engine(tmp_path, operator=stuck, max_iterations=10, stop_after_same_failures=3).run(Seed(KERNEL, "s"))
    assert [r.status for r in engine(tmp_path).archive.candidates()] == ["operator_error"] * 3
    # A resumed search is judged by its own iterations: the three recorded ones do not stop it.
    fixed = ScriptedOperator([{"a": 2}])
    out = engine(tmp_path, operator=fixed, max_iterations=4, stop_after_same_failures=3).run(Seed(KERNEL, "s"))
    assert out.iterations == 4 and len(fixed.seen) == 1
