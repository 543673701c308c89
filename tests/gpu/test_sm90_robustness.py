"""Hopper FlashAttention forward: empty problems, and the dynamic (causal) scheduler's atomic
counter across an aborted launch and CUDA graphs (needs an sm_90 GPU).

The causal kernel hands out work items from a global counter that its last CTA zeroes. Eager
launches share one counter per stream; every launch captured in a CUDA graph gets its own,
zeroed by a fill node captured with it. These tests check that no launch ever starts from a
non-zero counter or shares one with a kernel running at the same time.
"""

import importlib.util
import math
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cutlass")

pytestmark = pytest.mark.gpu
KERNEL = Path(os.environ.get("SM90_KERNEL") or
              Path(__file__).resolve().parents[2] / "kernels" / "cute_dsl" / "sm90" / "fmha_fwd.py")
TOL = 6e-3


def _load():
    spec = importlib.util.spec_from_file_location("sm90_fmha_fwd_robust_test", KERNEL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def mod():
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("needs an sm_90 GPU")
    return _load()


def _inputs(seed, b, s, hq, hk, d=128):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, generator=gen) for h in (hq, hk, hk)]


def _reference(q, k, v, causal):
    ratio = q.shape[2] // k.shape[2]
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    kf, vf = kf.repeat_interleave(ratio, dim=1), vf.repeat_interleave(ratio, dim=1)
    o = torch.nn.functional.scaled_dot_product_attention(qf, kf, vf, is_causal=causal, scale=1 / math.sqrt(q.shape[-1]))
    return o.transpose(1, 2)


def _err(out, ref):
    o = out.float()
    if not torch.isfinite(o).all():
        return float("inf")
    return ((o - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(0, 128, 4, 4), (2, 0, 4, 4), (0, 0, 8, 2), (2, 64, 0, 0)])
def test_empty_problem_gives_an_empty_result(mod, shape, causal):
    b, s, hq, hk = shape
    q = torch.randn(b, s, hq, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, s, hk, 128, device="cuda", dtype=torch.bfloat16)
    out = mod.attention(q, k, k.clone(), causal=causal)
    assert out.shape == q.shape and out.dtype == q.dtype and out.device == q.device
    given = torch.empty_like(q)
    assert mod.attention(q, k, k.clone(), causal=causal, out=given) is given
    torch.cuda.synchronize()  # no launch error left behind
    # and the next real launch is fine
    q, k, v = _inputs(3, 1, 300, 4, 4)
    assert _err(mod.attention(q, k, v, causal=causal), _reference(q, k, v, causal)) < TOL


def test_aborted_launch_then_correct(mod):
    """A launch call that fails after the kernel may have advanced the counter (simulated: the
    counter is left at garbage and the call raises) must not spoil the next launch."""
    q, k, v = _inputs(11, 2, 2048, 16, 16)
    ref = _reference(q, k, v, True)
    assert _err(mod.attention(q, k, v, causal=True), ref) < TOL  # compiles, creates the counter
    key = next(kk for kk in mod._CACHE if kk[-2] is True and kk[-3] == 128 and kk[-1] == 1)
    real = mod._CACHE[key]

    counter = mod._COUNTERS[(q.device, torch.cuda.current_stream().cuda_stream)]

    def aborted(*args):
        counter.fill_(123456)  # what a launch that died half-way could leave
        raise RuntimeError("launch aborted")

    mod._CACHE[key] = aborted
    try:
        with pytest.raises(RuntimeError, match="aborted"):
            mod.attention(q, k, v, causal=True)
    finally:
        mod._CACHE[key] = real
    for _ in range(2):
        out = mod.attention(q, k, v, causal=True, out=torch.full_like(q, float("nan")))
        assert _err(out, ref) < TOL


def test_first_use_of_a_stream_inside_a_capture(mod):
    """A counter made while a stream was being captured never ran its zero-fill: it must not be
    kept for that stream's later eager launches."""
    q, k, v = _inputs(5, 2, 1024, 16, 16)
    ref = _reference(q, k, v, True)
    mod.attention(q, k, v, causal=True)  # compile outside the capture
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    g = torch.cuda.CUDAGraph()
    out_g = torch.full_like(q, float("nan"))
    with torch.cuda.graph(g, stream=side):
        mod.attention(q, k, v, causal=True, out=out_g)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        outs = [mod.attention(q, k, v, causal=True, out=torch.full_like(q, float("nan"))) for _ in range(3)]
    torch.cuda.synchronize()
    for out in outs:
        assert _err(out, ref) < TOL
    g.replay()
    torch.cuda.synchronize()
    assert _err(out_g, ref) < TOL


def test_two_graphs_replayed_concurrently(mod):
    """Two graphs captured on the same (default capture) stream, replayed at the same time on
    two streams, again and again: each must compute its own problem in full every time."""
    problems = [_inputs(21, 2, 4096, 16, 16), _inputs(22, 1, 8192, 32, 8)]
    refs = [_reference(q, k, v, True) for q, k, v in problems]
    for q, k, v in problems:  # compile outside the capture
        mod.attention(q, k, v, causal=True)
    torch.cuda.synchronize()
    graphs, outs = [], []
    for q, k, v in problems:
        out = torch.full_like(q, float("nan"))
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            mod.attention(q, k, v, causal=True, out=out)
        graphs.append(g)
        outs.append(out)
    torch.cuda.synchronize()
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    for rnd in range(8):
        for out in outs:
            out.fill_(float("nan"))
        torch.cuda.synchronize()
        order = (0, 1) if rnd % 2 == 0 else (1, 0)
        for i in order:  # queued at once: the second starts as the first one's CTAs retire
            with torch.cuda.stream(streams[i]):
                graphs[i].replay()
        torch.cuda.synchronize()
        for i, (out, ref) in enumerate(zip(outs, refs)):
            assert _err(out, ref) < TOL, f"round {rnd}, graph {i}"
