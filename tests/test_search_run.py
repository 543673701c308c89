"""run_search wiring: Hydra config -> engine, seeds from a file, a module or another run."""

import json

import pytest
from hydra import compose, initialize_config_dir

from avo import config as avo_config
from avo.archive import Archive
from avo.config import ConfigError
from avo.lineage import Lineage
from avo.paths import conf_dir
from avo.search import seed as seeds
from avo.search.fakes import KERNEL, FakeEvaluator
from avo.search.run import bind_evaluator, run_search

avo_config.register()


def _cfg(*overrides):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=["+experiment=smoke", "logger=none", *overrides])


def test_bound_evaluator_passes_the_composed_suite_and_settings():
    calls = []
    cfg = _cfg("evaluator.repeats=3", "hardware.baselines=[cudnn]")
    bound = bind_evaluator(cfg, lambda *a, **k: calls.append((a, k)))
    bound("k.py")
    bound("k.py", incumbent="best.py", stages=("compile",))
    (args, kw), (args2, kw2) = calls
    assert args[0] == "k.py" and len(args[1]) == len(cfg.attention.shapes) and args[1][0].seqlen == 100
    assert kw["device"] == "cpu" and kw["settings"].repeats == 3 and kw["baselines"] == ("cudnn",)
    assert kw["stages"] == ("compile", "correctness", "benchmark", "reverify")
    assert kw2["incumbent"] == "best.py" and kw2["baselines"] == () and kw2["stages"] == ("compile",)


def test_run_search_from_config_with_a_fake_evaluator(tmp_path):
    out = run_search(_cfg("search.max_iterations=3"), tmp_path, evaluate=FakeEvaluator())
    assert out.iterations == 3 and Archive(tmp_path).count() == 3
    assert "[3/3]" in (tmp_path / "console.log").read_text()


def test_seed_from_module_and_transfer(tmp_path, monkeypatch):
    pkg = tmp_path / "pkgs" / "mykernels"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "fake.py").write_text(KERNEL)
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    first = tmp_path / "first"
    run_search(_cfg("search.max_iterations=3", "hardware.seed_kernel=module:mykernels.fake"), first,
               evaluate=FakeEvaluator())
    assert Lineage.of_run(first).versions()[0].subject.startswith("seed: module:mykernels.fake")

    second = tmp_path / "second"
    run_search(_cfg("search.max_iterations=1", f"search.transfer_from={first}"), second, evaluate=FakeEvaluator())
    head = Lineage.of_run(first).head()
    seed_commit = Lineage.of_run(second).versions()[0]
    assert seed_commit.subject == f"seed: transferred from {first}@{head}"
    assert Lineage.of_run(second).show(0) == Lineage.of_run(first).show(head)


def test_seed_errors_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        seeds.load("kernels/nope.py")
    with pytest.raises(ConfigError, match="cannot be found|not an installed"):
        seeds.load("module:no_such_pkg_xyz.mod")
    with pytest.raises(ConfigError, match="no lineage"):
        seeds.load("kernels/nope.py", transfer_from=str(tmp_path))


def test_cuda_runs_evaluate_through_the_device_pool(monkeypatch):
    """device=cuda binds the pool (one GPU per evaluation, per-GPU lock files); with no GPU visible
    the run stops with one clean error instead of a traceback."""
    from hydra import compose, initialize_config_dir

    from avo import config as avo_config
    from avo.evaluate import pool
    from avo.paths import conf_dir
    from avo.search.run import bind_evaluator

    avo_config.register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=mha_h100", "agent=knob", "model=none"])
    monkeypatch.setattr(pool, "visible_devices", lambda: [])
    with pytest.raises(avo_config.ConfigError, match="no GPU"):
        bind_evaluator(cfg)
    seen = []

    def fake_real_evaluate(*args, env=None, **kwargs):
        seen.append(env)
        return "result"

    monkeypatch.setattr(pool, "visible_devices", lambda: ["3"])
    monkeypatch.setattr("avo.evaluate.api.evaluate", fake_real_evaluate)
    assert bind_evaluator(cfg)("kernel.py") == "result"
    assert seen == [{"CUDA_VISIBLE_DEVICES": "3"}]


def test_a_resume_refuses_settings_that_change_results_but_takes_new_budgets(tmp_path):
    from avo.config import ConfigError

    run_search(_cfg("search.max_iterations=1"), tmp_path, evaluate=FakeEvaluator())
    with pytest.raises(ConfigError, match=r"evaluator.repeats: \d+ -> 7.*allow_changed_config") as err:
        run_search(_cfg("search.max_iterations=2", "evaluator.repeats=7"), tmp_path, evaluate=FakeEvaluator())
    assert "\n" not in str(err.value) and Archive(tmp_path).count() == 1  # nothing ran
    with pytest.raises(ConfigError, match="attention"):
        run_search(_cfg("search.max_iterations=2", "attention=mha"), tmp_path, evaluate=FakeEvaluator())
    with pytest.raises(ConfigError, match="hardware.seed_kernel"):
        run_search(_cfg("search.max_iterations=2", "hardware.seed_kernel=kernels/reference/sdpa.py"), tmp_path,
                   evaluate=FakeEvaluator())
    # Budgets: iterations, wall time, cost may all change; so may the words that describe the seed.
    out = run_search(_cfg("search.max_iterations=2", "search.max_wall_time_s=7200", "search.max_cost_usd=3",
                          "hardware.seed_note=reworded"), tmp_path, evaluate=FakeEvaluator())
    assert out.iterations == 2
    run_search(_cfg("search.max_iterations=3", "evaluator.repeats=7", "search.allow_changed_config=true"), tmp_path,
               evaluate=FakeEvaluator())
    with Archive(tmp_path) as arch:
        assert arch.count() == 3 and any("repeats" in c for c in arch.get_meta("results_config_changed"))


def test_a_rebuilt_archive_keeps_the_recorded_settings_and_elapsed_time(tmp_path):
    from avo.config import ConfigError
    from avo.search import results

    run_search(_cfg("search.max_iterations=2"), tmp_path, evaluate=FakeEvaluator())
    with Archive(tmp_path) as arch:
        recorded, elapsed = arch.get_meta("results_config"), arch.get_meta("elapsed_s")
    assert recorded and elapsed > 0 and results.run_state_path(tmp_path).is_file()
    (tmp_path / "archive.sqlite").write_bytes(b"")  # lost: rebuilt from results/ on the next start
    with pytest.raises(ConfigError, match=r"evaluator.repeats: \d+ -> 7"):
        run_search(_cfg("search.max_iterations=3", "evaluator.repeats=7"), tmp_path, evaluate=FakeEvaluator())
    (tmp_path / "archive.sqlite").unlink(missing_ok=True)
    out = run_search(_cfg("search.max_iterations=3"), tmp_path, evaluate=FakeEvaluator())
    assert out.iterations == 3
    with Archive(tmp_path) as arch:
        assert arch.get_meta("results_config") == recorded and arch.get_meta("elapsed_s") >= elapsed


def test_a_forged_run_state_is_ignored(tmp_path):
    from avo.search import results

    run_search(_cfg("search.max_iterations=1"), tmp_path, evaluate=FakeEvaluator())
    state = results.run_state_path(tmp_path)
    doc = json.loads(state.read_text())
    doc["result"]["results_config"]["evaluator"]["repeats"] = 999  # its MAC no longer holds
    state.write_text(json.dumps(doc))
    (tmp_path / "archive.sqlite").unlink()
    run_search(_cfg("search.max_iterations=2"), tmp_path, evaluate=FakeEvaluator())
    with Archive(tmp_path) as arch:
        assert arch.get_meta("results_config")["evaluator"]["repeats"] != 999
