"""Hopper FlashAttention forward vs an fp32 torch reference (needs an sm_90 GPU).

Shapes: the `smoke` suite and the `mha` suite with batch cut to 1 (same seqlens, heads, causal),
plus GQA and head-dim-64 rows; random inputs, NaN-poisoned output buffer.
"""

import importlib.util
import math
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cutlass")

from avo import suites  # noqa: E402

pytestmark = pytest.mark.gpu
# SM90_KERNEL=path/to/candidate.py checks a candidate version instead of the committed one.
KERNEL = Path(os.environ.get("SM90_KERNEL") or
              Path(__file__).resolve().parents[2] / "kernels" / "cute_dsl" / "sm90" / "fmha_fwd.py")
TOL = 6e-3


def _load():
    spec = importlib.util.spec_from_file_location("sm90_fmha_fwd_gpu_test", KERNEL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _needs_hopper():
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("needs an sm_90 GPU")


def _reference(q, k, v, causal, scale):
    ratio = q.shape[2] // k.shape[2]
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    kf, vf = kf.repeat_interleave(ratio, dim=1), vf.repeat_interleave(ratio, dim=1)
    o = torch.nn.functional.scaled_dot_product_attention(qf, kf, vf, is_causal=causal, scale=scale)
    return o.transpose(1, 2)


def _shapes():
    rows = [(s.batch, s.seqlen, s.heads_q, s.heads_kv, s.head_dim, s.causal) for s in suites.load("smoke")]
    rows += [(1, s.seqlen, s.heads_q, s.heads_kv, s.head_dim, s.causal) for s in suites.load("mha")]
    rows += [(1, 4096, 32, 8, 128, True), (1, 2048, 32, 32, 64, True), (2, 1000, 8, 8, 64, False)]
    return rows


SHAPES = _shapes()


@pytest.mark.parametrize("b,s,hq,hk,d,causal", SHAPES)
def test_matches_reference(b, s, hq, hk, d, causal):
    _needs_hopper()
    mod = _load()
    gen = torch.Generator(device="cuda").manual_seed(b * 1000003 + s * 31 + hq + d + causal)
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, generator=gen)
               for h in (hq, hk, hk))
    scale = 0.8 / math.sqrt(d)
    out = torch.full_like(q, float("nan"))
    res = mod.attention(q, k, v, causal=causal, softmax_scale=scale, out=out)
    assert res.data_ptr() == out.data_ptr()
    assert torch.isfinite(out).all(), "unwritten or non-finite output"
    ref = _reference(q, k, v, causal, scale)
    err = ((out.float() - ref).norm() / ref.norm()).item()
    assert err < TOL, f"relative error {err:.2e}"


def test_back_to_back_launches_on_two_streams():
    """Launch after launch must each write every tile (a persistent scheduler's shared state is
    reset between them), on the default stream and on a second stream alike."""
    _needs_hopper()
    mod = _load()
    gen = torch.Generator(device="cuda").manual_seed(7)
    q, k, v = (torch.randn(2, 1024, 16, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
               for _ in range(3))
    ref = _reference(q, k, v, True, 1 / math.sqrt(128))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    outs = []
    for stream in (torch.cuda.current_stream(), side, torch.cuda.current_stream()):
        with torch.cuda.stream(stream):
            for _ in range(3):
                outs.append(mod.attention(q, k, v, causal=True, out=torch.full_like(q, float("nan"))))
    torch.cuda.synchronize()
    for out in outs:
        assert torch.isfinite(out).all(), "a launch left tiles unwritten"
        assert ((out.float() - ref).norm() / ref.norm()).item() < TOL


def test_default_scale_and_fresh_output():
    _needs_hopper()
    mod = _load()
    q, k, v = (torch.randn(2, 300, 4, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out = mod.attention(q, k, v)
    ref = _reference(q, k, v, False, 1 / math.sqrt(128))
    assert ((out.float() - ref).norm() / ref.norm()).item() < TOL


def test_rejects_bad_input():
    _needs_hopper()
    mod = _load()
    q = torch.randn(1, 64, 3, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 64, 2, 128, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError):
        mod.attention(q, k, k)
    with pytest.raises(ValueError):
        mod.attention(q.float(), q.float(), q.float())
