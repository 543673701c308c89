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


# -- the clamp: what a lie the clock check lets through can gain -----------------------------------

def _judge(device: str):
    from avo.evaluate.judge.judge import Judge

    j = Judge.__new__(Judge)  # only the summary's state: no workers, no GPU
    j.device, j.result, j.s = device, {"notes": []}, S
    return j


def _side(name: str, reported: list[float], wall: list[float], trusted: bool = False):
    from avo.evaluate.judge.judge import Side

    s = Side(name, worker=None, trusted=trusted)
    s.reported, s.wall, s.calls = list(reported), list(wall), 4
    return s


def test_an_identical_kernel_whose_events_under_report_is_no_faster_than_its_honest_twin():
    # The null worker's protocol overhead per block jitters (median 0.5 ms, p90 0.58); the honest
    # incumbent and the liar do the same 4 ms of work with the same overhead, and the liar's events
    # say 0.92x: a lie inside the clock check's floor. Before the clamp used the null worker's
    # median, it took each block at its wall time less median + GAP_SLACK: a 2 % gain for any liar.
    from avo.evaluate.judge.judge import CLOCK_FLOOR, GAP_SLACK
    from avo.suites import Shape

    # Half the samples below the median overhead, half above (no luck in the median).
    jitter = [0.01, 0.02, -0.02, 0.05, -0.05, 0.08, -0.08, -0.01, -0.01, 0.03, -0.03, 0.12, -0.12, 0.02, 0.04, -0.04]
    work = [4.0 + 0.01 * (i % 3) for i in range(len(jitter))]
    walls = [w + 0.5 + j for w, j in zip(work, jitter)]
    shape = Shape(4, 2048, 16, 16, 128, False)
    for device in ("cuda", "cpu"):
        null = _side("null", [1e-3] * len(walls), [1e-3 + 0.5 + j for j in jitter], trusted=True)
        honest = _side("incumbent", work, walls)
        liar = _side("candidate", [0.92 * w for w in work], walls)
        row = _judge(device).summarize_shape(shape, [liar, honest, null], idle_post=0.0)
        assert CLOCK_FLOOR[device][0] < 0.92  # the lie is one the floor misses
        if device == "cuda":
            # The judge's clock alone: the same wall times, the same time, whatever the events say.
            assert abs(row["incumbent_ratio"] - 1.0) < 1e-12, row["incumbent_ratio"]
        else:
            # On a CPU the events count where the clock allows: the liar's time is the clock's on
            # every sample, the honest twin's its events where its overhead fell below the median,
            # so the liar gains at most the overhead's spread below its median (here 0.12 of 4 ms),
            # against GAP_SLACK plus that before 2026-12-04 (1.016x with these numbers on a GPU).
            assert row["incumbent_ratio"] <= 1.0 + 0.12 / 4.0, row["incumbent_ratio"]
        assert GAP_SLACK[device] >= 0


def test_the_null_worker_writes_its_slots_itself_so_its_overhead_holds_no_copy():
    # The judge subtracts the null worker's protocol overhead from every kernel's wall time; a
    # copy in it would be a gift to a kernel that skips its own (tests/hostile/r_gpu_skip_copy.py).
    import argparse

    import torch

    from avo.evaluate.worker.__main__ import Target

    null = Target(argparse.Namespace(kernel=None, baseline="null", role="null"))
    assert null.takes_out  # so a timed call (pass_out) hands it the slot and no copy follows
    q = torch.zeros(1, 8, 2, 16)
    out = torch.full_like(q, float("nan"))
    assert null.call(q, q, q, False, None, out) is out
