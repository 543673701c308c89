"""CPU compile check of the "fa3" pingpong mode of the Hopper forward (kernels/cute_dsl/sm90/fmha_fwd.py).

`pingpong_d128 = "fa3"` (and `pingpong_d64`) schedules the consumer warpgroups' turns as
FlashAttention-3 does: try_wait tokens, only the first warpgroup waits for K/V inside a turn, and
without intra-warpgroup overlap a turn of PV(j) + QK^T(j+1). Default off. Two compiles for sm_90a
without a GPU: the main loop it is meant for (d128 causal, overlap on, the dynamic scheduler) and
its other turn schedule (d128 non-causal, overlap off, the static persistent loop). The generic
knob sweep in test_sm90_compile.py compiles the value once more for each head dim.
"""

import importlib.util
from pathlib import Path

import pytest

cutlass = pytest.importorskip("cutlass")

KERNEL = Path(__file__).resolve().parents[1] / "kernels" / "cute_dsl" / "sm90" / "fmha_fwd.py"


def _load():
    spec = importlib.util.spec_from_file_location("sm90_fmha_fwd_cpu_test_fa3pp", KERNEL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MOD = _load()


def test_fa3_mode_is_a_knob_value_and_off_by_default():
    assert "fa3" in MOD.KNOB_SPACE["pingpong_d128"] and "fa3" in MOD.KNOB_SPACE["pingpong_d64"]
    assert MOD.KNOBS["pingpong_d128"] is False  # shipped d128 behaviour unchanged
    MOD.check_knobs(dict(MOD.KNOBS, pingpong_d128="fa3"), 128)
    bm, bn = MOD.tile_config(MOD.KNOBS, 128)
    mk = lambda pp, m=bm: MOD.Sm90FlashAttentionForward(128, 1, True, block_m=m, block_n=bn, pingpong=pp)  # noqa: E731
    assert mk("fa3").pingpong and mk("fa3").sched_fa3
    assert mk(True).pingpong and not mk(True).sched_fa3
    assert not mk(False).pingpong and not mk(False).sched_fa3
    assert not mk("fa3", 64).sched_fa3  # one consumer warpgroup: no turns to take
    with pytest.raises(AssertionError):
        mk("on")
    keys = {MOD._key(dict(MOD.KNOBS, pingpong_d128=v), cutlass.BFloat16, 128, True, 1) for v in (True, False, "fa3")}
    assert len(keys) == 3  # each mode compiles and caches on its own


@pytest.mark.parametrize("causal,overlap", [(True, True), (False, False)], ids=["d128-causal-overlap", "d128-noncausal-no-overlap"])
def test_fa3_pingpong_compiles_for_sm90a(causal, overlap):
    knobs = dict(MOD.KNOBS, pingpong_d128="fa3", intra_wg_overlap=overlap)
    compiled, seconds = MOD.compile_kernel(knobs, 128, causal, 1, tvm_ffi=False)
    assert compiled is not None
