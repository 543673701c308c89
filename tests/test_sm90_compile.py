"""CPU compile check of the Hopper FlashAttention forward (kernels/cute_dsl/sm90/fmha_fwd.py).

CuTe DSL traces and compiles down to sm_90a machine code without a GPU (fake, shape-dynamic
tensors), so a broken kernel is caught here before any GPU sees it.  Each knob value in
KNOB_SPACE is compiled at least once (one knob moved off the default at a time), for both head
dims and both causal settings where the knob applies; combinations the kernel cannot run must be
refused with a ValueError.
"""

import importlib.util
import zlib
from pathlib import Path

import pytest

cutlass = pytest.importorskip("cutlass")

KERNEL = Path(__file__).resolve().parents[1] / "kernels" / "cute_dsl" / "sm90" / "fmha_fwd.py"


def _load():
    spec = importlib.util.spec_from_file_location("sm90_fmha_fwd_cpu_test", KERNEL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MOD = _load()


def _variants():
    """(id, knobs, head_dim, causal): the default, then every other value of each knob."""
    base = dict(MOD.KNOBS)
    out = []
    for d in MOD.SUPPORTED_HEAD_DIMS:
        for causal in (False, True):
            out.append((f"default-d{d}-{'c' if causal else 'n'}", base, d, causal))
    for name, values in MOD.KNOB_SPACE.items():
        for val in values:
            if val == base[name]:
                continue
            knobs = dict(base, **{name: val})
            dims = [int(name[-2:])] if name.endswith(("_d64",)) else (
                [128] if name.endswith("_d128") else list(MOD.SUPPORTED_HEAD_DIMS))
            for d in dims:
                # causal changes the loop structure; non-causal is the other path
                # (crc32, not hash(): str hashes differ per process, and so would the test ids)
                causal = zlib.crc32(f"{name}={val}".encode()) % 2 == 0 if len(dims) == 1 else (d == 128)
                out.append((f"{name}={val}-d{d}-{'c' if causal else 'n'}", knobs, d, causal))
    return out


VARIANTS = _variants()


def test_knob_literals_are_consistent():
    assert set(MOD.KNOBS) == set(MOD.KNOB_SPACE)
    for name, value in MOD.KNOBS.items():
        assert value in MOD.KNOB_SPACE[name], name


@pytest.mark.parametrize("vid,knobs,d,causal", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_compiles_for_sm90a(vid, knobs, d, causal):
    try:
        MOD.check_knobs(knobs, d)
    except ValueError:
        pytest.skip(f"{vid}: combination refused by check_knobs (documented constraint)")
    compiled, seconds = MOD.compile_kernel(knobs, d, causal, 1, tvm_ffi=False)
    assert compiled is not None


def test_gqa_ratio_compiles():
    compiled, _ = MOD.compile_kernel(dict(MOD.KNOBS), 128, True, 4, tvm_ffi=False)
    assert compiled is not None


def test_invalid_combos_are_refused():
    too_big = dict(MOD.KNOBS, block_m_d128=192, block_n_d128=176, num_stages=3)
    with pytest.raises(ValueError):
        MOD.check_knobs(too_big, 128)
    with pytest.raises(ValueError):
        MOD.check_knobs(dict(MOD.KNOBS), 96)
    with pytest.raises(ValueError):
        MOD.check_knobs(dict(MOD.KNOBS, num_stages=7), 128)


def test_d64_tile_choice_follows_the_work_model():
    """192-row d64 tiles pad seqlen 1024 to 1152 rows, and causally the padded tile is the longest:
    there 128-row tiles win (measured 1.17x on the H100); elsewhere 192 stays."""
    knobs = dict(MOD.KNOBS)
    pick = lambda d, s, causal, k=knobs: MOD.effective_knobs(k, d, s, causal)["block_m_d64"]  # noqa: E731
    assert pick(64, 1024, True) == 128 and pick(64, 1000, True) == 128
    assert [pick(64, s, True) for s in (2048, 4096, 16384)] == [192] * 3
    assert pick(64, 1024, False) == 192 and pick(64, 8192, False) == 192
    assert MOD.effective_knobs(knobs, 128, 1024, True) is knobs
    assert pick(64, 1024, True, dict(knobs, tiles_by_cost_d64=False)) == 192
    small = MOD.effective_knobs(knobs, 64, 1024, True)
    assert small["pingpong_d64"] is False
    MOD.compile_kernel(small, 64, True, 1, tvm_ffi=False)  # the configuration it switches to compiles


def test_paper_grid_gqa_ratio_8_compiles():
    """The paper grid's 32/4 GQA rows run ratio 8 (non-causal: the static persistent path)."""
    compiled, _ = MOD.compile_kernel(dict(MOD.KNOBS), 128, False, 8, tvm_ffi=False)
    assert compiled is not None


def test_host_knows_which_launches_use_the_counter():
    """attention() decides on the host whether a launch needs a zeroed scheduler counter (and,
    under CUDA graph capture, one of its own); that must match what the kernel compiles."""
    for d in MOD.SUPPORTED_HEAD_DIMS:
        for causal in (False, True):
            for pc in (False, True):
                for stages in MOD.KNOB_SPACE["num_stages"]:
                    knobs = dict(MOD.KNOBS, persistent_causal=pc, num_stages=stages)
                    try:
                        MOD.check_knobs(knobs, d)
                    except ValueError:
                        continue
                    bm, bn = MOD.tile_config(knobs, d)
                    kern = MOD.Sm90FlashAttentionForward(d, 1, causal, block_m=bm, block_n=bn, num_stages=stages,
                                                         persistent_causal=pc)
                    assert kern.dynamic == MOD.uses_dynamic_scheduler(causal, pc, bm, bn, d, stages)
                    if stages == MOD.KNOBS["num_stages"]:
                        assert kern.dynamic == (causal and pc)  # the default tiles leave room for O
