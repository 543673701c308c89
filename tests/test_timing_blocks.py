"""How the judge sizes its timing blocks and reads a block's reported times (pure functions)."""

from __future__ import annotations

from dataclasses import asdict

from avo.config import EvaluatorConfig
from avo.evaluate.judge.judge import BLOCK_BYTES, _times, block_calls, block_cap

S = asdict(EvaluatorConfig())
SET = 128 << 20  # one input set of a small mha shape: q, k, v, out


def test_a_gpu_block_holds_timing_block_ms_of_the_null_workers_work():
    cap = block_cap(S, "cuda", SET)
    assert cap == S["timing_block_max"] == 16
    assert block_calls(S, cap, 0.22) == 16  # 19 wanted, capped
    assert block_calls(S, cap, 1.5) == 3
    assert block_calls(S, cap, 6.0) == 1
    assert block_calls(S, cap, None) == cap  # no yardstick: the longest block, never a shorter one


def test_a_block_never_takes_more_than_its_share_of_memory():
    big = BLOCK_BYTES // 5
    assert block_cap(S, "cuda", big) == 5
    assert block_cap(S, "cuda", 2 * BLOCK_BYTES) == 1


def test_a_cpu_times_single_calls_unless_told_and_zero_ms_turns_blocks_off():
    assert block_cap(S, "cpu", SET) == 1
    assert block_cap({**S, "timing_block_ms": 0.0}, "cuda", SET) == 1
    forced = {**S, "timing_block_calls": 3}
    assert block_cap(forced, "cpu", SET) == 3 and block_calls(forced, 3, 0.01) == 3


def test_a_blocks_reported_time_is_the_sum_of_exactly_its_calls():
    assert _times([1.0, 2.0, 0.5], 3) == 3.5
    assert _times(0.7, None) == 0.7
    assert _times([1.0, 2.0], 3) is None  # one number missing: no time sent
    assert _times(1.0, 3) is None  # a single number for a block
    assert _times(["x"], 1) is None
    # A negative or non-finite report counts as nothing: the judge's clock decides then.
    assert _times([-5.0, float("nan"), 1.0], 3) == 1.0
