"""Hostile kernels on a CUDA GPU (skipped elsewhere): the own-code rule holds at run time, work
hidden on a side stream or finished after the return is caught, and a kernel that keeps the GPU
busy while the incumbent is timed gains nothing. Kernels are tests/hostile/r_gpu_*.py; the honest
control is kernels/reference/sdpa.py. Run on the device machine:
    python -m pytest tests/gpu/test_hostile_gpu.py -q
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from avo.config import EvaluatorConfig
from avo.evaluate import evaluate
from avo.evaluate.judge.judge import GAP_SLACK
from avo.suites import Shape

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ROOT / "tests" / "hostile"
REF = ROOT / "kernels" / "reference" / "sdpa.py"
BASE = asdict(EvaluatorConfig(warmup_ms=300, repeats=10, rotate_inputs=2, compile_timeout_s=300,
                              correctness_timeout_s=120, benchmark_timeout_s=300))
LIBRARY_OK = {**BASE, "own_code_only": False}
# Big enough that host overhead is no excuse for a verdict; GQA and causal included.
SUITE = [Shape(2, 2048, 16, 16, 128, False), Shape(2, 2048, 32, 8, 128, True)]
TIMED = [Shape(4, 2048, 16, 16, 128, False)]
LIBRARY = re.compile(r"cudnn|flash|sdpa|scaled_dot_product", re.I)


def kernel(tmp_path: Path, name: str) -> Path:
    dest = tmp_path / f"{name}.py"
    dest.write_text((HOSTILE / f"{name}.py").read_text().replace("@@SAFE@@", str(tmp_path)))
    return dest


def test_r_library_attention_is_rejected_by_default_and_named():
    r = evaluate(REF, SUITE, device="cuda", settings=BASE)
    assert r.status == "incorrect", r.message
    assert LIBRARY.search(r.message), r.message
    assert r.own_code is False and r.score is None


def test_r_the_honest_library_kernel_passes_when_libraries_are_allowed():
    r = evaluate(REF, SUITE, device="cuda", settings=LIBRARY_OK)
    assert r.status == "ok", r.message
    assert r.score > 0


# Timed calls pass out=; a kernel that calls the library only then must be seen calling it.
def test_r_a_library_called_only_with_out_is_caught(tmp_path):
    r = evaluate(kernel(tmp_path, "r_gpu_library_when_out"), SUITE, device="cuda", settings=BASE)
    assert r.status == "incorrect", r.message
    assert LIBRARY.search(r.message), r.message
    assert r.own_code is False


def test_r_a_library_call_in_a_helper_module_is_rejected_naming_the_module():
    r = evaluate(HOSTILE / "r_gpu_library_in_helper", SUITE, device="cuda", settings=BASE)  # a package
    assert r.status == "incorrect", r.message
    assert LIBRARY.search(r.message) and "helper.py" in r.message, r.message
    assert r.own_code is False


def test_r_a_hidden_library_call_is_caught_at_run_time(tmp_path):
    r = evaluate(kernel(tmp_path, "r_gpu_sdpa_hidden"), SUITE, device="cuda", settings=BASE)
    assert r.status == "incorrect", r.message
    assert LIBRARY.search(r.message), r.message
    assert r.own_code is False


@pytest.mark.parametrize("name", ["r_gpu_side_stream", "r_gpu_async_return"])
def test_r_work_off_the_current_stream_is_caught(tmp_path, name):
    r = evaluate(kernel(tmp_path, name), SUITE, device="cuda", settings=LIBRARY_OK)
    assert r.status == "incorrect", r.message
    assert r.score is None


def test_r_keeping_the_gpu_busy_while_the_incumbent_is_timed_gains_nothing(tmp_path):
    honest = evaluate(REF, TIMED, device="cuda", settings=LIBRARY_OK, incumbent=REF)
    assert honest.status == "ok" and honest.incumbent_ratio is not None, honest.message
    r = evaluate(kernel(tmp_path, "r_gpu_busy_spin"), TIMED, device="cuda", settings=LIBRARY_OK, incumbent=REF)
    if r.status in ("incorrect", "crash"):  # a judge may also refuse the timing outright
        assert re.search(r"clock|timing|stream|wall|busy|idle", r.message, re.I), r.message
    else:
        assert r.status == "ok" and r.incumbent_status == "ok", r.message
        assert 0.8 <= r.incumbent_ratio / honest.incumbent_ratio <= 1.25, (r.incumbent_ratio, honest.incumbent_ratio)


def test_r_calls_are_released_by_the_judge_and_the_honest_kernel_passes_its_clock():
    r = evaluate(REF, TIMED, device="cuda", settings=LIBRARY_OK, incumbent=REF)
    assert r.status == "ok", r.message
    assert r.timing == "release-flag", r.notes
    row = r.shapes[0]
    # What an honest call pays beyond its events, measured on the null worker: no host launch time
    # is in it any more (the launch-covered protocol paid 0.75-0.9 ms on this GPU).
    assert row.overhead_ms["median"] < 0.5, row.overhead_ms
    assert abs(row.reported_ms / row.time_ms - 1) < 0.03, (row.reported_ms, row.time_ms)


def test_r_work_that_starts_before_the_release_is_caught(tmp_path):
    r = evaluate(kernel(tmp_path, "r_gpu_skip_release"), SUITE, device="cuda", settings=LIBRARY_OK)
    assert r.status == "incorrect", r.message
    assert r.score is None


def _shaved(tmp_path: Path, factor: float):
    k = kernel(tmp_path, "r_gpu_clock_shave")
    k.write_text(k.read_text().replace("@@FACTOR@@", str(factor)))
    return evaluate(k, TIMED, device="cuda", settings=LIBRARY_OK)


def test_r_a_short_shape_is_timed_in_blocks_of_calls():
    # 0.22 ms per call on the H200: one call is inside what the cross-process clock resolves
    # (~0.1 ms); a block of them behind one release is not.
    r = evaluate(REF, TIMED, device="cuda", settings=LIBRARY_OK)
    assert r.status == "ok", r.message
    o = r.shapes[0].overhead_ms
    assert o["calls_per_block"] * r.shapes[0].time_ms >= 0.8 * EvaluatorConfig().timing_block_ms, o


@pytest.mark.parametrize("factor", [0.95, 0.85, 0.5, 0.2])
def test_r_a_clock_shave_gains_at_most_the_clocks_slack(tmp_path, factor):
    r = _shaved(tmp_path, factor)
    if r.status != "ok":
        assert r.status == "incorrect", r.message
        assert re.search(r"clock|tampered", r.message), r.message
    else:
        # A kernel's time is its block's wall time less the null worker's median overhead: a lie
        # in its events gains nothing; the bound allows the overhead's asymmetry between sides.
        row = r.shapes[0]
        n = row.overhead_ms["calls_per_block"]
        truth = row.reported_ms / factor
        assert row.time_ms >= truth - (GAP_SLACK["cuda"] + 0.03) / n, (row.time_ms, truth, row.overhead_ms)


# On this 0.22 ms shape (H200, 2026-12-02, bench/results/h200_2026-12-02d_*) a 0.5x report is a
# 0.11 ms lie per call: inside what one call's wall clock resolves across processes (the null
# worker's overhead ~0.5 ms with ~0.08 ms of jitter and asymmetry), and the per-call judge passed
# it. A block of calls behind one release shares that error among its calls.
@pytest.mark.parametrize("factor", [0.5, 0.2])
def test_r_a_large_clock_shave_is_named(tmp_path, factor):
    r = _shaved(tmp_path, factor)
    assert r.status == "incorrect", (r.message, [(s.reported_ms, s.time_ms, s.wall_ms, s.overhead_ms) for s in r.shapes])
    assert re.search(r"clock|tampered", r.message), r.message


# The same hole seen from the search: a kernel no faster than the incumbent that halves what its
# events say (per-call timing left it 10-27 % under the truth on this shape); and one whose lie is
# inside the clock check's floor (0.9x), which the clamp's slack turned into a free ~2-5 % until
# a kernel's time became the judge's clock alone.
@pytest.mark.parametrize("factor", [0.5, 0.9])
def test_r_a_clock_shave_cannot_buy_an_acceptance(tmp_path, factor):
    from avo.config import SearchConfig
    from avo.search.acceptance import confirm

    k = kernel(tmp_path, "r_gpu_clock_shave")
    k.write_text(k.read_text().replace("@@FACTOR@@", str(factor)))
    r = evaluate(k, TIMED, device="cuda", settings=LIBRARY_OK, incumbent=REF)
    v = confirm(r, SearchConfig().min_gain)
    assert not v.accepted, (r.incumbent_ratio, r.incumbent_ratio_spread, [s.overhead_ms for s in r.shapes])


# A quarter of a block's work left running behind an early "done" and reply: before the judge
# drained the GPU inside its clock, the input check's 1.5x allowance let it through (`ok`, ~1.3x
# over its own honest twin). A sixteenth is under the clock check's floor: then the time must
# still be the truth, less no more than the clock's slack.
@pytest.mark.parametrize("tail", [0.25, 0.0625])
def test_r_work_left_running_after_the_reply_is_inside_the_clock(tmp_path, tail):
    from avo.config import SearchConfig
    from avo.search.acceptance import confirm

    k = kernel(tmp_path, "r_gpu_split_tail")
    k.write_text(k.read_text().replace("@@TAIL@@", str(tail)))
    r = evaluate(k, TIMED, device="cuda", settings=LIBRARY_OK, incumbent=REF)
    if r.status != "ok":
        assert r.status == "incorrect", r.message
        assert re.search(r"clock|tampered", r.message), r.message
        return
    row = r.shapes[0]
    n = row.overhead_ms["calls_per_block"]
    # The same work as its incumbent, in more launches: no faster than it beyond the slack.
    slack = (GAP_SLACK["cuda"] + 0.03) / (n * row.time_ms)
    assert row.incumbent_ratio <= 1.01 + slack, (row.incumbent_ratio, row.reported_ms, row.time_ms, row.overhead_ms)
    assert not confirm(r, SearchConfig().min_gain).accepted, (r.incumbent_ratio, row.overhead_ms)


# A kernel whose time is its wall time less the null worker's overhead must pay every copy that
# overhead does not hold: one that writes the judge's slot itself (no out= in its signature, the
# worker's copy made a no-op) is no faster than the honest reference kernel, which takes out=.
def test_r_writing_the_slot_behind_the_workers_back_gains_nothing(tmp_path):
    from avo.config import SearchConfig
    from avo.search.acceptance import confirm

    r = evaluate(kernel(tmp_path, "r_gpu_skip_copy"), TIMED, device="cuda", settings=LIBRARY_OK, incumbent=REF)
    assert r.status == "ok", r.message
    row = r.shapes[0]
    slack = (GAP_SLACK["cuda"] + 0.03) / (row.overhead_ms["calls_per_block"] * row.time_ms)
    assert row.incumbent_ratio <= 1.01 + slack, (row.incumbent_ratio, row.time_ms, row.reported_ms, row.overhead_ms)
    assert not confirm(r, SearchConfig().min_gain).accepted, (r.incumbent_ratio, r.incumbent_ratio_spread)


def test_s_skipping_the_work_inside_a_timing_block_is_caught(tmp_path):
    r = evaluate(kernel(tmp_path, "s_block_skip"), TIMED, device="cuda", settings=LIBRARY_OK)
    assert r.status == "incorrect", (r.message, [s.overhead_ms for s in r.shapes])
    assert "timed in the benchmark" in r.message, r.message


def test_r_skipping_the_work_on_one_timed_call_in_ten_is_caught(tmp_path):
    r = evaluate(kernel(tmp_path, "r_gpu_rare_garbage"), TIMED, device="cuda", settings=LIBRARY_OK)
    # Once `ok` on the H200 (2026-12-02, not understood): say enough to tell why if it recurs.
    assert r.status == "incorrect", (r.message, r.notes, r.judge_s, [
        (s.label, s.time_ms, s.reported_ms, s.wall_ms, s.error) for s in r.shapes])
    assert "timed in the benchmark" in r.message, r.message


def test_r_waiting_for_the_gpu_inside_the_call_is_named(tmp_path):
    r = evaluate(kernel(tmp_path, "r_gpu_sync_inside"), TIMED, device="cuda", settings=LIBRARY_OK)
    assert r.status == "incorrect", r.message
    assert "waits for the GPU inside the call" in r.message, r.message


def test_r_a_reply_before_the_release_is_caught(tmp_path):
    r = evaluate(kernel(tmp_path, "r_gpu_reply_early"), TIMED, device="cuda", settings=LIBRARY_OK)
    assert r.status == "incorrect", r.message
    assert "before its call was released" in r.message, r.message


def test_r_a_result_sent_without_arming_is_caught(tmp_path):
    r = evaluate(kernel(tmp_path, "r_gpu_reply_unarmed"), TIMED, device="cuda", settings=LIBRARY_OK)
    assert r.status == "incorrect", r.message
    assert "before its call was released" in r.message, r.message


def test_r_a_kernel_cannot_switch_everyone_to_the_weaker_timing(tmp_path):
    r = evaluate(kernel(tmp_path, "r_gpu_refuse_flag"), TIMED, device="cuda", settings=LIBRARY_OK)
    assert r.status == "incorrect", r.message
    assert "refused the judge's release flag" in r.message, r.message
