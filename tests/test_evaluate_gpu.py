"""The evaluator on a CUDA GPU (skipped elsewhere): the CPU verdicts hold there too, the baselines
run, and the reference timed against itself reads ~1. Run on the device machine:
    python -m pytest tests/test_evaluate_gpu.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avo.config import EvaluatorConfig
from avo.evaluate import evaluate
from avo.suites import Shape

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "kernels/reference/sdpa.py"
FIX = ROOT / "tests/fixtures/kernels"
# The fixtures here stand in for kernels with torch's SDPA; the own-code rule that rejects that
# is tested on its own (tests/gpu/test_hostile_gpu.py), so these tests switch it off.
FAST = EvaluatorConfig(warmup_ms=300, repeats=10, rotate_inputs=2, compile_timeout_s=300,
                       correctness_timeout_s=120, benchmark_timeout_s=300, own_code_only=False)
# Big enough to be timed meaningfully, small enough to be quick; GQA and causal included.
SHAPES = [Shape(4, 2048, 16, 16, 128, False), Shape(4, 2048, 16, 16, 128, True),
          Shape(2, 2048, 32, 8, 128, False)]


def test_reference_ok_with_baselines():
    r = evaluate(REF, SHAPES, device="cuda", settings=FAST, baselines=("cudnn", "fa2", "fa4"))
    assert r.status == "ok", r.message
    assert r.env.get("gpu") and r.env.get("capability")
    for s in r.shapes:
        assert s.tflops > 1.0 and s.spread < 0.2
        assert s.baselines.get("cudnn") or s.baselines.get("fa2"), r.notes
        for name, tf in s.baselines.items():  # every baseline with a result was timed interleaved
            assert tf is None or s.baseline_ratios[name] > 0, (name, s)
    assert r.speedups.get("fa2") is not None or r.speedups.get("cudnn") is not None
    print(r.notes)


@pytest.mark.parametrize("fixture, status, stage", [
    ("scaled_2pct", "incorrect", "correctness"),
    ("half_output", "incorrect", "correctness"),
    ("half_output_noout", "incorrect", "correctness"),
    ("memoise", "incorrect", "correctness"),
    ("memoise_late", "incorrect", "benchmark"),
    ("crash", "crash", "compile"),
])
def test_bad_kernels_on_gpu(fixture, status, stage):
    r = evaluate(FIX / f"{fixture}.py", "smoke", device="cuda", settings=FAST)
    assert (r.status, r.stage) == (status, stage), r.message


def test_incumbent_against_itself_on_gpu():
    r = evaluate(REF, SHAPES[:1], device="cuda", settings=FAST, incumbent=REF)
    assert r.status == "ok", r.message
    assert 0.95 < r.incumbent_ratio < 1.05, r.shapes[0]


def test_fa4_wrapper_obeys_the_contract():
    pytest.importorskip("flash_attn.cute")
    r = evaluate(ROOT / "kernels/baselines/fa4.py", SHAPES[:1], device="cuda", settings=FAST, allow_library=True)
    # FA4 may not support every smoke configuration on this GPU; if so the verdict says which.
    assert r.status in ("ok", "incorrect"), r.message


def test_a_baseline_against_itself_reads_one():
    """FA4 wrapped as the candidate, timed interleaved against FA4 the baseline: the speedup the
    evaluator reports must be ~1 on every shape (separate timings drifted by up to 8 %)."""
    pytest.importorskip("flash_attn.cute")
    r = evaluate(ROOT / "kernels/baselines/fa4.py", SHAPES[:2], device="cuda", settings=FAST, baselines=("fa4",))
    assert r.status == "ok", r.message
    for s in r.shapes:
        assert 0.97 < s.baseline_ratios["fa4"] < 1.03, s
    assert 0.98 < r.speedups["fa4"] < 1.02 and r.speedup_noise["fa4"] is not None
