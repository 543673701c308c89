"""Every experiment composes with all eight groups; user mistakes end in one clean line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from avo import config as avo_config
from avo.paths import conf_dir

EXPERIMENTS = ["smoke", "mha_b200", "gqa_b200", "mha_h100", "gqa_h100", "paper_h200"]
GROUPS = ["model", "agent", "knowledge", "search", "attention", "hardware", "evaluator", "logger"]

avo_config.register()


def _compose(overrides):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_with_all_groups(name):
    cfg = _compose([f"+experiment={name}"])
    for group in GROUPS:
        assert group in cfg and OmegaConf.is_config(cfg[group]), group
    assert cfg.name == name
    avo_config.validate(cfg)
    assert cfg.attention.shapes, "suite has shapes"


def test_experiments_pick_the_documented_groups():
    h100 = _compose(["+experiment=mha_h100"])
    assert h100.hardware.arch == "sm_90a"
    assert h100.hardware.seed_kernel == "kernels/cute_dsl/sm90/fmha_fwd.py"
    assert h100.attention.suite == "mha" and len(h100.attention.shapes) == 10
    gqa = _compose(["+experiment=gqa_b200"])
    # the B200 seed is FA4's own forward, copied from the install at run start (a pinned version)
    assert gqa.hardware.arch == "sm_100a" and gqa.hardware.seed_kernel == "kernels/seeds/fa4_forward.py"
    assert (gqa.hardware.seed_source.package, gqa.hardware.seed_source.version) == ("flash_attn.cute", "4.0.0b36")
    assert _compose(["+experiment=mha_h100"]).hardware.seed_source is None
    assert _compose(["hardware=h200_fa4seed"]).hardware.seed_source.into == "fa4"
    assert all(s.heads_q > s.heads_kv for s in gqa.attention.shapes)
    paper = _compose(["+experiment=paper_h200"])
    assert (paper.hardware.name, paper.attention.suite, len(paper.attention.shapes)) == ("h200", "paper", 24)
    assert list(paper.hardware.baselines) == ["cudnn", "fa3", "fa4"]
    assert {(s.heads_q, s.heads_kv) for s in paper.attention.shapes} == {(16, 16), (32, 4), (32, 8)}
    assert {s.batch * s.seqlen for s in paper.attention.shapes} == {32768}
    smoke = _compose(["+experiment=smoke"])
    assert (smoke.agent.kind, smoke.hardware.device, smoke.logger.mode) == ("knob", "cpu", "offline")


def test_every_group_option_composes():
    for group in GROUPS + ["prompts"]:
        for option in sorted(p.stem for p in (conf_dir() / group).glob("*.yaml")):
            cfg = _compose([f"{group}={option}"])
            assert cfg[group] is not None


def test_overrides_are_typed():
    cfg = _compose(["+experiment=smoke", "search.max_iterations=7", "search.seed=3"])
    assert cfg.search.max_iterations == 7 and cfg.search.seed == 3


@pytest.mark.parametrize(
    "bad",
    [
        ["search.max_iterations=-1"],
        ["search.strategy=annealing"],
        ["hardware.baselines=[cudnn,xformers]"],
        ["agent=avo"],  # no model
        ["evaluator.repeats=0"],  # was quietly taken as 1
        ["evaluator.rotate_inputs=0"],
        ["evaluator.tolerance=0"],
        ["evaluator.warmup_ms=-5"],
        ["evaluator.timing_block_max=0"],
        ["evaluator.timing_block_ms=-1"],
        ["evaluator.timing_block_calls=-2"],
        ["model.prompt_cache=sometimes"],
    ],
)
def test_validate_rejects_semantic_mistakes(bad):
    cfg = _compose(["+experiment=smoke", *bad])
    with pytest.raises(avo_config.ConfigError):
        avo_config.validate(cfg)


def _run_avo(*args, env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "HYDRA_FULL_ERROR")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "avo", *args], capture_output=True, text=True,
                          env=full_env, timeout=120, cwd=cwd)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["+experiment=nope"], "experiment/nope"),
        (["+experiment=smoke", "model=gpt9"], "model/gpt9"),
        (["+experiment=smoke", "search.foo=1"], "search.foo"),
        (["+experiment=smoke", "search.max_iterations=many"], "search.max_iterations"),
        (["+experiment=smoke", "search.strategy=annealing"], "search.strategy"),
        (["+experiment=smoke", "attention.shapes=[{batch:1}]"], "seqlen"),
    ],
)
def test_user_mistakes_are_one_clean_line(args, needle):
    res = _run_avo(*args, "dry_run=true")
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("avo: error:") and needle in lines[0], lines[0]


@pytest.mark.parametrize("bad", ["evaluator.repeats=0", "search.max_iterations=many", "attention.shapes=[{batch:1}]"])
def test_a_refused_new_run_says_one_line_and_leaves_no_run_dir(tmp_path, bad):
    run = tmp_path / "run"
    res = _run_avo("+experiment=smoke", "logger=none", bad, f"hydra.run.dir={run}")
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode != 0 and "Traceback" not in res.stderr and len(lines) == 1, res.stderr
    assert lines[0].startswith("avo: error:") and bad.split("=")[0].split(".")[-1] in lines[0], lines[0]
    assert not run.exists(), list(run.rglob("*"))


def _bwrap_ro(path):
    """argv prefix that mounts `path` read-only (as root a chmod stops nothing)."""
    if not shutil.which("bwrap") or subprocess.run(["bwrap", "--dev-bind", "/", "/", "true"]).returncode != 0:
        pytest.skip("needs bubblewrap for a read-only mount")
    return ["bwrap", "--dev-bind", "/", "/", "--ro-bind", str(path), str(path)]


def test_a_read_only_run_dir_or_lineage_is_one_line(tmp_path):
    from avo.lineage import Lineage

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    ro = tmp_path / "ro"
    ro.mkdir()
    lin_run = tmp_path / "lin"
    Lineage.of_run(lin_run).init()  # its lineage exists, and cannot be written
    for run, mount in ((ro, ro), (lin_run, lin_run / "lineage")):
        res = subprocess.run([*_bwrap_ro(mount), sys.executable, "-m", "avo", "+experiment=smoke", "logger=none",
                              f"hydra.run.dir={run}"], capture_output=True, text=True, env=env, timeout=300)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("avo: error: cannot write"), res.stderr[-2000:]
        assert "writable" in lines[0]


def test_an_external_agent_that_is_not_installed_is_named_before_the_search(tmp_path):
    run = tmp_path / "run"
    cmd = "agent.command='no-such-agent-xyz -p {prompt_file}'"
    res = _run_avo("+experiment=smoke", "logger=none", "agent=cli", cmd, f"hydra.run.dir={run}")
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "'no-such-agent-xyz', which is not on PATH" in lines[0], res.stderr
    assert not run.exists()
    res = _run_avo("+experiment=smoke", "logger=none", "agent=cli", cmd, "dry_run=true", f"hydra.run.dir={run}")
    assert res.returncode == 0 and "note: agent.command runs 'no-such-agent-xyz'" in res.stdout, res.stdout


def test_missing_key_names_the_variable_and_suggests_knob(tmp_path):
    res = _run_avo("+experiment=mha_h100", "search.max_iterations=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "ANTHROPIC_API_KEY" in res.stderr and "agent=knob" in res.stderr


def test_a_dry_run_needs_no_key_says_what_is_missing_and_leaves_no_run_dir(tmp_path):
    run = tmp_path / "run"
    res = _run_avo("+experiment=mha_b200", "dry_run=true", f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stderr
    # the plan shows where the seed comes from: FA4's forward, copied from the install at run start
    assert "seed kernel  kernels/seeds/fa4_forward.py" in res.stdout
    assert "seed source  flash_attn.cute [interface] copied under fa4/ at run start from flash-attn-4 4.0.0b36" \
        in res.stdout
    assert "note:" in res.stdout and "ANTHROPIC_API_KEY" in res.stdout
    assert not run.exists()


def test_dry_run_prints_the_plan_and_leaves_no_folder_in_the_default_place(tmp_path):
    (tmp_path / "keep").mkdir()  # the user's own folders stay
    res = _run_avo("+experiment=mha_h100", "agent=knob", "model=none", "dry_run=true", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "kernels/cute_dsl/sm90/fmha_fwd.py" in res.stdout and "mha (10 shapes)" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]  # no outputs/mha_h100/<date>


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_a_dry_multirun_prints_every_jobs_plan_and_leaves_no_folder(tmp_path, launcher):
    (tmp_path / "keep").mkdir()
    res = _run_avo("-m", "+experiment=smoke", "logger=none", "dry_run=true", "search.seed=0,1",
                   f"hydra/launcher={launcher}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "seed 0" in res.stdout and "seed 1" in res.stdout, res.stdout[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]  # no multirun/smoke/<date>/multirun.yaml


def test_cfg_job_prints_the_composed_config():
    res = _run_avo("+experiment=gqa_h100", "--cfg", "job")
    assert res.returncode == 0, res.stderr
    printed = OmegaConf.create(res.stdout)
    assert printed.attention.suite == "gqa" and printed.hardware.name == "h100"


def test_a_key_on_the_command_line_is_refused_and_removed_from_the_run_dir(tmp_path):
    key = "sk-FAKECRED" + os.urandom(8).hex()
    res = _run_avo("+experiment=smoke", f"+model.api_key={key}", "dry_run=true", f"hydra.run.dir={tmp_path}")
    assert res.returncode != 0 and "model.api_key is not read" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file() and key in p.read_text(errors="replace")]
    assert not leaked and key not in res.stdout + res.stderr, leaked


def test_a_search_whose_iterations_all_fail_alike_stops_with_the_reason(tmp_path):
    run = tmp_path / "run"
    # The program starts (so the preflight passes) and fails alike every time: its own "not found".
    res = _run_avo("+experiment=smoke", "agent=cli", "agent.command='sh -c \"no-such-agent-xyz {prompt_file}\"'",
                   "search.max_iterations=10", "search.stop_after_same_failures=2", f"hydra.run.dir={run}")
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("avo: error: the last 2 iterations all failed the same way") and "not found" in last
    assert "[ 2/10]" in res.stdout and "[ 3/10]" not in res.stdout
