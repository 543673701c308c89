"""search.parallel: rounds of candidates proposed and evaluated at once, decided in iteration order."""

import threading
import time
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from avo.archive import Archive
from avo.config import ConfigError
from avo.evaluate.pool import DevicePool
from avo.operators.knob import KnobOperator
from avo.search.budgets import Budgets
from avo.search.engine import Engine
from avo.search.fakes import KERNEL, FakeEvaluator, ScriptedOperator
from avo.search.run import parallelism
from avo.search.seed import Seed
from avo.search.strategies import AvoStrategy, GreedyStrategy
from run_checks import check_consistent, events

# Scores with the fake evaluator (product of 1 + sqrt(knob)): seed 4.0; a=2 -> 4.83; b=2 from the
# seed -> 4.83 too (no gain over a=2); a=4 -> 6.0. Rounds of 3 from the seed: accepted, then
# confirmed against candidate 1 and NOT accepted, then accepted against candidate 1.
STEPS = [{"a": 2}, {"b": 2}, {"a": 4}, {"b": 4}, {"a": 8}, {"b": 8}, {"a": 1}, {"b": 1}]


class Boom(BaseException):
    """Stands for kill -9: nothing in the engine catches it."""


class Timed:
    """An evaluator that takes a little while and records who ran what, when."""

    def __init__(self, delay=0.05, fail=None):
        self.fake, self.delay, self.fail = FakeEvaluator(), delay, fail
        self.spans, self._lock = [], threading.Lock()

    def __call__(self, kernel, **kw):
        kind = "confirm" if kw.get("incumbent") else "candidate"
        start = time.monotonic()
        time.sleep(self.delay)
        if self.fail == (Path(kernel).parent.name, kind):
            raise Boom
        result = self.fake(kernel, **kw)
        with self._lock:
            self.spans.append(NS(cand=Path(kernel).parent.name, kind=kind, start=start, end=time.monotonic(),
                                 thread=threading.get_ident(), device=kw.get("env", {}).get("CUDA_VISIBLE_DEVICES")))
        return result


class SlowOperator(ScriptedOperator):
    def __init__(self, steps, delay=0.05, fail_at=None):
        super().__init__(steps)
        self.delay, self.fail_at, self.spans = delay, fail_at, []

    def propose(self, ctx):
        start = time.monotonic()
        time.sleep(self.delay)
        if ctx.iteration == self.fail_at:
            raise Boom
        out = super().propose(ctx)
        self.spans.append((ctx.iteration, start, time.monotonic(), threading.get_ident()))
        return out


def _engine(run_dir, operator=None, evaluate=None, parallel=3, strategy=None, **budget):
    return Engine(run_dir, strategy=strategy or AvoStrategy(0.01, 5), operator=operator or ScriptedOperator(STEPS),
                  evaluate=evaluate or FakeEvaluator(), budgets=Budgets(**{"max_iterations": 7, **budget}),
                  info={"name": "t"}, parallel=parallel)



def _overlap(spans):
    return any(a.start < b.end and b.start < a.end for i, a in enumerate(spans) for b in spans[i + 1:])




def test_a_round_proposes_and_evaluates_at_once_then_decides_in_order(tmp_path):
    ev, op = Timed(), SlowOperator(STEPS)
    out = _engine(tmp_path, operator=op, evaluate=ev).run(Seed(KERNEL, "s"))
    assert out.iterations == 7
    rows = check_consistent(tmp_path, 7)
    # Rounds [1-3], [4-6], [7]: candidate evaluations and proposals of a round overlapped in time.
    first = [s for s in ev.spans if s.kind == "candidate" and s.cand in ("0001", "0002", "0003")]
    assert _overlap(first) and len({s.thread for s in first}) == 3
    assert _overlap([NS(start=s, end=e) for i, s, e, _ in op.spans if i <= 3])
    # Each round varies the best at its start, and is decided against the best of the moment.
    assert [r.parent for r in rows] == [0, 0, 0, 3, 3, 3, 6]
    assert [r.verdict for r in rows[:3]] == ["accepted", "not-confirmed", "accepted"]
    assert rows[1].best_score == rows[0].score and rows[1].incumbent_ratio == pytest.approx(1.0)
    confirms = [c for c in ev.fake.calls if c["incumbent"]]
    assert [(Path(c["kernel"]).parent.name, Path(c["incumbent"]).parent.name) for c in confirms[:3]] == [
        ("0001", "0000"), ("0002", "0001"), ("0003", "0001")]
    # Confirmations run one at a time, each after the previous iteration was recorded.
    order = [(e["event"], e["candidate"]) for e in events(tmp_path)
             if e["event"] == "recorded" or (e.get("kind") == "confirm" and e["phase"] == "start")]
    assert order[:6] == [("evaluate", 1), ("recorded", 1), ("evaluate", 2), ("recorded", 2),
                         ("evaluate", 3), ("recorded", 3)]
    assert not _overlap([s for s in ev.spans if s.kind == "confirm"])


def test_greedy_accepts_in_order_against_the_current_best(tmp_path):
    fake = FakeEvaluator()
    _engine(tmp_path, strategy=GreedyStrategy(0.0), evaluate=fake, max_iterations=3).run(Seed(KERNEL, "s"))
    rows = Archive(tmp_path).candidates()
    assert [r.verdict for r in rows] == ["accepted", "slower", "accepted"]
    assert [r.best_score for r in rows] == [4.0, rows[0].score, rows[0].score]
    assert not any(c["incumbent"] for c in fake.calls)


def test_budgets_bound_rounds(tmp_path):
    out = _engine(tmp_path / "it", max_iterations=5).run(Seed(KERNEL, "s"))  # rounds of 3 and 2
    assert out.iterations == 5 and Archive(tmp_path / "it").count() == 5
    op = ScriptedOperator(STEPS, cost_usd=0.4)
    out = _engine(tmp_path / "cost", operator=op, parallel=2, max_iterations=10, max_cost_usd=1.0).run(
        Seed(KERNEL, "s"))
    assert out.iterations == 4 and "max_cost_usd" in out.stop_reason  # checked between rounds


def test_duplicates_within_a_round_are_evaluated_once(tmp_path):
    fake = FakeEvaluator()
    op = ScriptedOperator([{"a": 2}, {"a": 2}, {"b": 2}])
    _engine(tmp_path, operator=op, evaluate=fake, max_iterations=3).run(Seed(KERNEL, "s"))
    rows = Archive(tmp_path).candidates()
    assert [r.status for r in rows] == ["ok", "duplicate", "ok"] and "candidate 1" in rows[1].message
    assert [Path(c["kernel"]).parent.name for c in fake.calls if not c["incumbent"]].count("0002") == 0


def test_supervisor_intervenes_once_per_round(tmp_path):
    op = ScriptedOperator([{"a": 2}] + ["broken"] * 8)
    _engine(tmp_path, operator=op, strategy=AvoStrategy(0.01, 2), max_iterations=9).run(Seed(KERNEL, "s"))
    rows = Archive(tmp_path).candidates()
    assert [r.intervention for r in rows] == [None] * 3 + ["review", None, None, "restart", None, None]
    assert [r.parent for r in rows] == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    seen = {s["iteration"]: s for s in op.seen}
    assert [i for i in sorted(seen) if seen[i]["directive"]] == [4, 7]


def test_knob_search_in_rounds_is_reproducible(tmp_path):
    keys = []
    for name in ("a", "b"):
        _engine(tmp_path / name, operator=KnobOperator(), max_iterations=6).run(Seed(KERNEL, "s"))
        keys.append([(r.source_hash, r.verdict) for r in Archive(tmp_path / name).candidates()])
    assert keys[0] == keys[1] and len(keys[0]) == 6


def test_knob_round_mates_never_pick_the_same_configuration(tmp_path):
    """Iterations of one round see the same archive and parent; before the knob operator knew
    its round-mates, two of them could draw the same setting and waste an evaluation."""
    _engine(tmp_path, operator=KnobOperator(), parallel=4, max_iterations=12).run(Seed(KERNEL, "s"))
    rows = Archive(tmp_path).candidates()
    assert len(rows) == 12 and not [r.id for r in rows if r.status == "duplicate"]
    assert len({r.source_hash for r in rows}) == 12


def test_knob_round_mates_are_reproducible_in_any_thread_order(tmp_path):
    from avo.operators.base import VariationContext

    def ctx(i):
        return VariationContext(iteration=5 + i, parent_id="0", parent_source=KERNEL, parent_result=None,
                                run_dir=tmp_path, workspace=tmp_path, rng=__import__("random").Random(i),
                                evaluate=None, extra={"round": {"index": i, "size": 3, "seed": "0:round:5"}})

    forward = [KnobOperator().propose(ctx(i)).source for i in range(3)]
    backward = [KnobOperator().propose(ctx(i)).source for i in reversed(range(3))][::-1]
    assert forward == backward and len(set(forward)) == 3 and KERNEL not in forward


@pytest.mark.parametrize("where", ["propose", "evaluate", "confirm"])
def test_crash_mid_round_then_resume_loses_nothing_finished(tmp_path, where):
    # Round [4, 5, 6] is interrupted at candidate 5 (at 6 for the confirmation: 5 is screened out);
    # the others finish what they were doing.
    first = {"propose": dict(operator=SlowOperator(STEPS, fail_at=5)),
             "evaluate": dict(evaluate=Timed(fail=("0005", "candidate"))),
             "confirm": dict(evaluate=Timed(fail=("0006", "confirm")))}[where]
    with pytest.raises(Boom):
        _engine(tmp_path, **first).run(Seed(KERNEL, "s"))
    before = Archive(tmp_path).count()
    assert before == (5 if where == "confirm" else 3)
    assert (tmp_path / "results/0006/proposal.json").is_file()
    if where == "evaluate":
        assert (tmp_path / "results/0004/eval.json").is_file() and (tmp_path / "results/0006/eval.json").is_file()

    op, fake = SlowOperator(STEPS, delay=0.0), FakeEvaluator()
    out = _engine(tmp_path, operator=op, evaluate=fake).run(Seed(KERNEL, "never read on resume"))
    assert out.resumed and out.iterations == 7
    check_consistent(tmp_path, 7)
    proposed = sorted(i for i, *_ in op.spans)
    evaluated = {Path(c["kernel"]).parent.name for c in fake.calls if not c["incumbent"]}
    assert proposed == ([5, 7] if where == "propose" else [7])
    finished = {"0001", "0002", "0003"} | ({"0004", "0006"} if where != "propose" else set())
    assert not evaluated & finished  # only proposals were done in the propose case
    assert ("0005" in evaluated) == (where != "confirm")
    if where == "confirm":  # its confirmation, against the same incumbent, was redone
        assert [Path(c["kernel"]).parent.name for c in fake.calls if c["incumbent"]][0] == "0006"


def test_device_pool_spreads_a_round_over_devices_without_sharing_one(tmp_path):
    ev = Timed(delay=0.1)

    def on_device(kernel, suite=None, *, env, **kw):
        return ev(kernel, env=env, **kw)

    with DevicePool(devices=["a", "b"], evaluate=on_device, lock_dir=tmp_path / "locks", keys=["a", "b"]) as pool:
        out = _engine(tmp_path / "run", evaluate=pool.evaluate, parallel=4, max_iterations=8).run(Seed(KERNEL, "s"))
    assert out.iterations == 8
    check_consistent(tmp_path / "run", 8)
    by_device = {d: [s for s in ev.spans if s.device == d] for d in ("a", "b")}
    assert all(by_device.values())  # both devices were used
    assert not any(_overlap(spans) for spans in by_device.values())  # never two at once on one
    assert _overlap([s for s in ev.spans if s.kind == "candidate"])  # but the two devices did overlap


def test_parallel_setting():
    def bound(*a, **k):
        pass

    assert parallelism(NS(parallel=3), bound) == 3
    assert parallelism(NS(parallel=0), bound) == 1  # a CPU evaluator: one at a time
    bound.slots = 4
    assert parallelism(NS(parallel=0), bound) == 4 and parallelism(NS(), bound) == 1
    with pytest.raises(ConfigError, match="search.parallel"):
        parallelism(NS(parallel=-1), bound)


def test_the_default_uses_every_gpu_of_a_slurm_job_that_holds_several(monkeypatch):
    def bound(*a, **k):
        pass

    bound.slots = 8
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert parallelism(NS(parallel=None), bound) == 1  # a workstation: one at a time unless asked
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert parallelism(NS(parallel=None), bound) == 8  # slurm_b200_node: the whole node
    assert parallelism(NS(parallel=1), bound) == 1  # said explicitly
    bound.slots = 1
    assert parallelism(NS(parallel=None), bound) == 1  # slurm_b200: one GPU


def test_parallel_zero_means_one_per_device_of_the_pool(tmp_path):
    from hydra import compose, initialize_config_dir

    from avo import config as avo_config
    from avo.paths import conf_dir
    from avo.search.run import build_engine

    avo_config.register()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=smoke", "logger=none", "search.parallel=0"])
    with DevicePool(devices=["a", "b"], evaluate=lambda *a, env, **k: None, lock_dir=None, keys=["a", "b"]) as pool:
        e = build_engine(cfg, tmp_path / "pool", evaluate=pool.evaluate, console=False)
        assert e.parallel == 2
        e.archive.close()
    e = build_engine(cfg, tmp_path / "cpu", evaluate=FakeEvaluator(), console=False)
    assert e.parallel == 1  # no pool: one at a time
    e.archive.close()


def test_concurrently_waits_for_all_then_raises_the_first_failure():
    import ast

    from avo.search.threads import concurrently

    done = []

    def ok(i):
        time.sleep(0.05)
        done.append(i)
        return i

    def bad(msg):
        raise ValueError(msg)

    assert concurrently([lambda: ok(1), lambda: ok(2)]) == [1, 2]
    with pytest.raises(ValueError, match="first"):
        concurrently([lambda: ok(3), lambda: bad("first"), lambda: bad("second"), lambda: ok(4)])
    assert sorted(done) == [1, 2, 3, 4]  # the others still finished (and saved) their work
    assert concurrently([lambda: threading.current_thread()]) == [threading.current_thread()]
    assert isinstance(ast.parse("x = 1"), ast.Module)  # still ast.parse (serialized on CPython < 3.13)
