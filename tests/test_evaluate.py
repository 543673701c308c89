"""The evaluator's verdicts on CPU: the reference passes, every bad kernel fails with the right
status and stage, the caller survives crashes and hangs, and the CLI's exit codes and JSON hold."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avo.config import EvaluatorConfig
from avo.evaluate import EvalResult, UsageError, evaluate
from avo.evaluate.worker.loader import format_exception
from avo.evaluate.plan import OFF_TILE_SEQLEN, correctness_shapes, settings_dict
from avo.evaluate.judge.reference import compare, make_inputs, reference
from avo.evaluate.judge.timing import percentile, spread
from avo.suites import Shape, load

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "kernels/reference/sdpa.py"
FIX = ROOT / "tests/fixtures/kernels"
FAST = EvaluatorConfig(warmup_ms=20, repeats=5, rotate_inputs=2, compile_timeout_s=60,
                       correctness_timeout_s=60, benchmark_timeout_s=120)
TOL = EvaluatorConfig().tolerance


def run(kernel, **kw):
    kw.setdefault("settings", FAST)
    return evaluate(kernel, kw.pop("suite", "smoke"), device="cpu", **kw)


# -- end to end, one child process each ------------------------------------------------------------

def test_reference_is_ok_with_a_full_record():
    r = run(REF)
    assert r.status == "ok" and r.stage is None and r.message == ""
    assert [s.label for s in r.shapes] == [s.label for s in load("smoke")]
    for s in r.shapes:
        assert s.tflops > 0 and s.time_ms > 0 and s.spread >= 0
        assert s.error is not None and s.error < TOL / 2  # re-verified after timing
    assert r.score == pytest.approx(math.exp(sum(math.log(s.tflops) for s in r.shapes) / len(r.shapes)))
    assert r.compile_s is not None and r.compile_s >= 0
    assert len(r.checks) == len(load("smoke")) and all(c["error"] < TOL for c in r.checks)
    assert r.env["torch"] == torch.__version__ and r.env["device"] == "cpu" and "seed" in r.env
    assert r.incumbent_ratio is None and r.incumbent_status is None


@pytest.mark.parametrize("fixture, status, stage, says", [
    ("scaled_2pct", "incorrect", "correctness", "relative error"),
    ("import_raises", "import_error", "import", "fails while importing"),
    ("no_attention", "import_error", "import", "defines no attention"),
    ("compile_fails", "compile_error", "compile", "ptxas error"),
    ("half_output", "incorrect", "correctness", "NaN-poisoned"),  # its out= got a NaN buffer
    ("half_output_noout", "incorrect", "correctness", "on batch="),
    ("memoise", "incorrect", "correctness", "relative error"),
    ("memoise_late", "incorrect", "benchmark", "timed in the benchmark"),
    ("crash", "crash", "compile", "SIGSEGV"),
    ("forge_verdict", "incorrect", "compile", "forged"),  # its fake "ok" is caught as a forgery
])
def test_bad_kernels_get_the_right_verdict(fixture, status, stage, says):
    r = run(FIX / f"{fixture}.py")
    assert (r.status, r.stage) == (status, stage), r.message
    assert says in r.message
    assert len(r.message) < 4000
    assert r.score is None


def test_half_output_fails_on_the_unwritten_rows():
    r = run(FIX / "half_output.py")
    # Rows from seqlen//2 on were never written: the first bad row is exactly the middle one.
    assert "first bad (batch, row, head) = (0, 50, 0)" in r.message


def test_a_late_cache_is_caught_by_reverification():
    """memoise_late is honest for its first 4 calls per shape; without the benchmark's own
    checks, the re-verification on fresh inputs must catch it."""
    r = run(FIX / "memoise_late.py", stages=("compile", "correctness", "reverify"))
    assert (r.status, r.stage) == ("incorrect", "reverify"), r.message


def test_import_error_names_the_kernel_line_not_our_frames():
    r = run(FIX / "import_raises.py")
    assert 'File "import_raises.py", line 3' in r.message
    assert "worker/__main__.py" not in r.message and "judge" not in r.message and "<frozen" not in r.message


def test_a_hang_times_out_within_its_stage_limit_and_says_where():
    settings = EvaluatorConfig(**{**settings_dict(FAST), "compile_timeout_s": 3.0})
    r = run(FIX / "infinite_loop.py", settings=settings)
    # The judge's own deadline fired (its message), not the overall one: no wall-clock assertion,
    # which a loaded machine would break.
    assert (r.status, r.stage) == ("timeout", "compile"), r.message
    assert "limit of 3 s" in r.message
    assert "infinite_loop.py" in r.message  # the hung child's stack, dumped before the kill


def test_the_overall_timeout_caps_the_run():
    r = run(FIX / "infinite_loop.py", timeout=4.0)  # the loop never ends: only the cap ends the run
    assert r.status == "timeout" and "overall timeout of 4 s" in r.message


def test_crash_reports_the_signal_and_the_kernel_frame():
    r = run(FIX / "crash.py")
    assert r.status == "crash" and "crash.py" in r.message


def test_incumbent_against_itself_is_compared_shape_by_shape():
    # How close to 1 it comes is the GPU's question (tests/gpu, bench/self_confirm.py): a loaded
    # CPU decides nothing here. What must hold anywhere: every shape compared, the suite's ratio
    # the geomean of the shapes', the noise reported.
    r = run(REF, incumbent=REF)
    assert r.status == "ok" and r.incumbent_status == "ok"
    assert r.env["sources"]["candidate"] == r.env["sources"]["incumbent"]
    for s in r.shapes:
        assert s.incumbent_ratio > 0 and s.incumbent_ratio_spread >= 0 and s.incumbent_tflops > 0
    geo = math.exp(sum(math.log(s.incumbent_ratio) for s in r.shapes) / len(r.shapes))
    assert r.incumbent_ratio == pytest.approx(geo, rel=1e-9)
    assert r.incumbent_ratio_spread is not None and r.incumbent_ratio_spread > 0


def test_a_wrong_incumbent_is_reported_not_compared():
    r = run(REF, incumbent=FIX / "scaled_2pct.py")
    assert r.status == "ok"
    assert r.incumbent_status.startswith("incorrect") and r.incumbent_ratio is None
    assert any("incumbent not compared" in n for n in r.notes)


def test_baselines_on_cpu_are_skipped_with_a_note():
    r = run(REF, baselines=("cudnn", "fa4"), stages=("compile", "benchmark"))
    assert r.status == "ok" and all(s.baselines == {} for s in r.shapes)
    assert "cudnn: skipped (baselines are timed on CUDA only)" in r.notes and r.speedups == {}


def test_stages_compile_only_and_compile_plus_correctness():
    r = run(REF, stages=("compile",))
    assert r.status == "ok" and r.compile_s is not None and not r.checks and not r.shapes
    r = run(REF, stages=("compile", "correctness"))
    assert r.status == "ok" and len(r.checks) == len(load("smoke")) and not r.shapes and r.score is None
    r = run(FIX / "scaled_2pct.py", stages=("compile",))
    assert r.status == "ok"  # it compiles; correctness was not asked for


def test_usage_errors_are_exceptions_not_verdicts(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        run(tmp_path / "missing.py")
    with pytest.raises(UsageError, match="unknown suite"):
        run(REF, suite="nope")
    with pytest.raises(UsageError, match="unknown stage"):
        run(REF, stages=("compile", "fly"))
    with pytest.raises(UsageError, match="unknown baseline"):
        run(REF, baselines=("cublas",))


def test_custom_shape_list_and_result_roundtrip(tmp_path):
    r = run(REF, suite=[Shape(1, 67, 2, 1, 64, True)])
    assert r.status == "ok" and r.suite == "custom" and r.shapes[0].label == "b1_s67_h2kv1_d64_causal"
    r.write(tmp_path / "r.json")
    back = EvalResult.read(tmp_path / "r.json")
    assert back.to_dict() == r.to_dict()


# -- the CLI ---------------------------------------------------------------------------------------

def cli(*args):
    return subprocess.run([sys.executable, "-m", "avo.evaluate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_ok_writes_json_and_exits_0(tmp_path):
    out = tmp_path / "ref.json"
    p = cli(REF, "--suite", "smoke", "--device", "cpu", "--json", out, "--repeats", 3, "--warmup-ms", 10)
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert data["status"] == "ok" and len(data["shapes"]) == 4 and data["score"] > 0
    assert "status ok" in p.stdout and "b1_s257_h8kv2_d128" in p.stdout


def test_cli_failed_kernel_exits_1_with_json(tmp_path):
    out = tmp_path / "bad.json"
    p = cli(FIX / "scaled_2pct.py", "--suite", "smoke", "--device", "cpu", "--json", out)
    assert p.returncode == 1
    data = json.loads(out.read_text())
    assert (data["status"], data["stage"]) == ("incorrect", "correctness")
    assert "relative error" in p.stdout


@pytest.mark.parametrize("args, says", [
    (["missing.py", "--suite", "smoke", "--device", "cpu"], "kernel file not found"),
    ([REF, "--suite", "nope", "--device", "cpu"], "unknown suite"),
    ([REF, "--device", "tpu"], "invalid choice"),
])
def test_cli_usage_errors_exit_2_in_one_line(args, says):
    p = cli(*args)
    assert p.returncode == 2
    assert says in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


# -- the pieces, in process ------------------------------------------------------------------------

def _flash_like(q, k, v, causal):
    """What a bf16 flash kernel does: fp32 scores and softmax, P rounded to bf16, bf16 output."""
    b, s, hq, d = q.shape
    g = hq // k.shape[2]
    kk, vv = (t.repeat_interleave(g, dim=2).float().transpose(1, 2) for t in (k, v))
    scores = q.float().transpose(1, 2) @ kk.transpose(-1, -2) / math.sqrt(d)
    if causal:
        scores.masked_fill_(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
    p = torch.softmax(scores, -1).to(torch.bfloat16).float()
    return (p @ vv).transpose(1, 2).to(torch.bfloat16)


@pytest.mark.parametrize("shape", load("smoke"), ids=lambda s: s.label)
@pytest.mark.parametrize("q_std", [1.0, 3.0])
def test_tolerance_passes_bf16_rounding_and_fails_a_1pct_scale(shape, q_std):
    q, k, v = make_inputs(shape, "cpu", torch.bfloat16, seed=7, q_std=q_std)
    ref = reference(q, k, v, shape.causal)
    assert ref.dtype == torch.float64
    good = _flash_like(q, k, v, shape.causal)
    assert compare(good, ref, None, TOL).error < TOL / 2  # bf16 attention passes with margin
    off = (ref * 1.01).to(torch.bfloat16)
    assert compare(off, ref, None, TOL).error > TOL * 1.3  # a 1 % scale error fails clearly


def test_reference_matches_torch_sdpa_in_float64():
    shape = Shape(2, 37, 6, 2, 16, True)
    q, k, v = make_inputs(shape, "cpu", torch.float64, seed=1)
    ours = reference(q, k, v, True)
    theirs = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True).transpose(1, 2)
    torch.testing.assert_close(ours, theirs)
    rows = torch.tensor([0, 5, 36])
    torch.testing.assert_close(reference(q, k, v, True, rows=rows), theirs[:, rows])


@pytest.mark.parametrize("chunk", [1 << 28, 6 * 37 * 37 * 2, 37 * 37 * 4, 1])
def test_reference_chunking_matches_sdpa(monkeypatch, chunk):
    """Several batches per chunk, one batch per chunk, and heads split within a batch: same answer."""
    import avo.evaluate.judge.reference as reference_mod

    monkeypatch.setattr(reference_mod, "_CHUNK_ELEMS", chunk)
    shape = Shape(5, 37, 6, 2, 16, True)
    q, k, v = make_inputs(shape, "cpu", torch.float64, seed=2)
    theirs = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True).transpose(1, 2)
    torch.testing.assert_close(reference_mod.reference(q, k, v, True), theirs)
    rows = torch.tensor([0, 3, 20, 36])
    torch.testing.assert_close(reference_mod.reference(q, k, v, True, rows=rows), theirs[:, rows])


def test_inputs_are_fresh_and_never_zero():
    shape = load("smoke")[0]
    a, b = make_inputs(shape, "cpu", torch.bfloat16, 1), make_inputs(shape, "cpu", torch.bfloat16, 2)
    assert all((x != 0).float().mean() > 0.99 for x in a)
    assert not torch.equal(a[0], b[0])


def test_compare_flags_nonfinite_and_locates_the_error():
    shape = Shape(1, 20, 2, 2, 8)
    q, k, v = make_inputs(shape, "cpu", torch.float32, 3)
    ref = reference(q, k, v, False)
    out = ref.clone().float()
    out[0, 13, 1] += 1.0
    c = compare(out, ref, None, TOL)
    assert c.error > TOL and c.worst == (0, 13, 1) and c.nonfinite == 0
    out[0, 4, 0, 0] = float("nan")
    assert compare(out, ref, None, TOL).nonfinite == 1


def test_correctness_shapes_cover_the_suite_classes_off_tile():
    mha = load("mha")
    shapes = correctness_shapes(mha, "cuda")
    extra = shapes[:2]
    assert {(s.heads_q, s.head_dim, s.causal) for s in extra} == {(16, 128, False), (16, 128, True)}
    assert all(s.seqlen == OFF_TILE_SEQLEN["cuda"] and s.batch <= 2 for s in extra)
    assert shapes[2:] == load("smoke") or set(shapes[2:]) == set(load("smoke"))
    smoke = correctness_shapes(load("smoke"), "cpu")
    assert smoke[0] == load("smoke")[0] and set(smoke) == set(load("smoke"))


def test_settings_from_objects_and_mappings():
    assert settings_dict(None)["tolerance"] == TOL
    assert settings_dict({"repeats": 7})["repeats"] == 7
    assert settings_dict(EvaluatorConfig(warmup_ms=5))["warmup_ms"] == 5.0


def test_statistics():
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(xs, 0.5) == 3.0 and percentile(xs, 0.2) == pytest.approx(1.8)
    assert spread(xs) == pytest.approx((4.2 - 1.8) / 3.0)


def test_long_compiler_errors_are_trimmed_to_head_and_tail():
    try:
        raise RuntimeError("HEAD " + "x" * 10_000 + " TAIL")
    except RuntimeError as exc:
        msg = format_exception(exc)
    assert len(msg) <= 2000 and "HEAD" in msg and "TAIL" in msg and "chars cut" in msg


def test_reference_kernel_obeys_the_contract():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sdpa_ref", REF)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.KNOBS == {} and mod.KNOB_SPACE == {}
    shape = Shape(1, 33, 4, 2, 16, True)
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = make_inputs(shape, "cpu", dtype, 5)
        out = torch.full_like(q, float("nan"))
        assert mod.attention(q, k, v, causal=True, out=out) is out
        assert compare(out, reference(q, k, v, True), None, TOL).error < TOL


def test_suite_speedups_come_from_the_interleaved_ratios():
    from avo.evaluate.api import summarize
    from avo.evaluate.result import EvalResult, ShapeResult

    rows = [ShapeResult(label=f"s{i}", shape={}, tflops=100.0, baselines={"cudnn": 100.0},
                        baseline_ratios={"cudnn": r}, baseline_ratio_se={"cudnn": 0.01}) for i, r in enumerate((1.1, 0.9))]
    r = EvalResult(status="ok", shapes=rows)
    summarize(r)
    # Equal TFLOP/s from separate timings would say 1.0; the interleaved ratios are what counts.
    assert r.speedups["cudnn"] == pytest.approx(math.sqrt(1.1 * 0.9))
    from avo.evaluate.plan import INTERVAL_Z, NOISE_FLOOR

    se = math.sqrt(2 * 0.01**2) / 2  # two shapes, 1 % each, in log units
    assert r.speedup_noise["cudnn"] == pytest.approx(
        INTERVAL_Z * math.sqrt(se**2 + NOISE_FLOOR["cuda"] ** 2) * r.speedups["cudnn"])
    old = EvalResult(status="ok", shapes=[ShapeResult(label="s", shape={}, tflops=110.0, baselines={"cudnn": 100.0})])
    summarize(old)  # a record from before interleaving: the TFLOP/s ratio, no noise figure
    assert old.speedups["cudnn"] == pytest.approx(1.1) and "cudnn" not in old.speedup_noise


def test_a_shape_list_equal_to_a_suite_takes_its_name_and_env_reaches_the_worker(tmp_path):
    kernel = tmp_path / "env_kernel.py"
    kernel.write_text(REF.read_text() + (
        "\nimport os\n"
        "if os.environ.get('CUDA_VISIBLE_DEVICES') != '7' or 'AVO_TEST_MARKER' in os.environ:\n"
        "    raise RuntimeError('env: ' + repr(sorted(os.environ)))\n"))
    # The pool's GPU pin reaches the kernel's process; a variable outside the allow-list does not.
    r = run(kernel, suite=list(load("smoke")), stages=("compile",),
            env={"AVO_TEST_MARKER": "x", "CUDA_VISIBLE_DEVICES": "7"})
    assert r.status == "ok" and r.suite == "smoke", r.message


def test_config_shapes_are_accepted_as_a_suite():
    from avo.config import Shape as ConfigShape

    r = run(REF, suite=[ConfigShape(batch=1, seqlen=50, heads_q=2, heads_kv=2, head_dim=32)],
            stages=("compile",))
    assert r.status == "ok" and r.suite == "custom"


def test_acceptance_margin_is_one_sided_99pct_of_the_geomean_ratio_with_the_run_to_run_floor():
    from avo.evaluate.api import summarize
    from avo.evaluate.plan import ACCEPT_Z, NOISE_FLOOR
    from avo.evaluate.result import EvalResult, ShapeResult

    rows = [ShapeResult(label=f"s{i}", shape={}, tflops=1.0, incumbent_ratio=1.1, incumbent_ratio_se=0.02)
            for i in range(4)]
    r = EvalResult(status="ok", shapes=rows, device="cuda")
    summarize(r)
    # four independent shapes, each with a 2 % standard error in log ratio -> 1 % on the geomean,
    # plus the floor for what one measurement cannot see (another set of processes, another phase)
    assert abs(r.incumbent_ratio - 1.1) < 1e-9
    assert r.incumbent_ratio_spread == pytest.approx(ACCEPT_Z * math.sqrt(0.01**2 + NOISE_FLOOR["cuda"] ** 2) * 1.1)
    assert ACCEPT_Z >= 2.32  # one-sided 1 %: an identical kernel is accepted at most 1 % of the time


def test_median_log_se_shrinks_with_repeats():
    import random

    from avo.evaluate.judge.timing import median_log_se

    rng = random.Random(0)
    few = [1.0 + rng.gauss(0, 0.05) for _ in range(10)]
    many = [1.0 + rng.gauss(0, 0.05) for _ in range(1000)]
    assert median_log_se(few) > 3 * median_log_se(many)
    assert 0.0 < median_log_se(many) < 0.004  # about 1.25 * 0.05 / sqrt(1000)
    assert median_log_se([1.0, 1.1]) is None


@pytest.mark.parametrize("line, version", [
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build", "580.159.04"),
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  Tue Jan 7 2025", "570.86.15"),
])
def test_driver_version_is_read_from_either_module_line(line, version, monkeypatch):
    from pathlib import Path

    from avo.evaluate.judge import envinfo

    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: line)
    assert envinfo._driver() == version
