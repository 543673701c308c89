"""Hostile kernel, attack c (measurement): compute the right answer slowly, fake the clocks.

Each call sleeps 0.2 s before computing the correct output, then moves every clock it can reach
back by 99 % of the time the call really took, so a timer in this process sees it ~100x faster:
time.perf_counter / perf_counter_ns / monotonic / monotonic_ns / time, the same names bound in
any avo* module, and torch.cuda.Event.elapsed_time (1 µs). For good measure the comparison
helpers a same-process checker would use are made to agree: torch.allclose, torch.isfinite,
torch.linalg.vector_norm (-> 0), torch.Tensor.__sub__ (-> zeros).

Verdict: `incorrect` naming the clock / timing, or `ok` with every time_ms >= 200 — never `ok`
with a fast time. The judge's own clock brackets every call.
"""
import sys
import time

import torch

_real = {name: getattr(time, name) for name in ("perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time")}
_skew = 0.0  # seconds hidden so far


def _fake(name):
    real = _real[name]
    if name.endswith("_ns"):
        return lambda: real() - int(_skew * 1e9)
    return lambda: real() - _skew


def _install():
    fakes = {name: _fake(name) for name in _real}
    for name, fn in fakes.items():
        setattr(time, name, fn)
    for modname, mod in list(sys.modules.items()):
        if modname.startswith("avo"):
            for name, fn in fakes.items():
                if getattr(mod, name, None) is _real[name]:
                    setattr(mod, name, fn)
    torch.cuda.Event.elapsed_time = lambda self, end: 1e-3
    torch.allclose = lambda *a, **k: True
    torch.isfinite = lambda t: torch.ones(t.shape, dtype=torch.bool, device=t.device)
    norm = torch.linalg.vector_norm
    torch.linalg.vector_norm = lambda t, *a, **k: norm(t, *a, **k) * 0
    torch.Tensor.__sub__ = lambda a, b: torch.zeros(torch.broadcast_shapes(a.shape, getattr(b, "shape", ())),
                                                    dtype=a.dtype, device=a.device)


def _attn(q, k, v, causal, scale):
    b, s, h, d = q.shape
    g = h // k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    kf, vf = kf.repeat_interleave(g, 1), vf.repeat_interleave(g, 1)
    p = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    if causal:
        p = p.masked_fill(torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.matmul(p.softmax(-1), vf).transpose(1, 2).to(q.dtype).contiguous()


_install()


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    global _skew
    t0 = _real["perf_counter"]()
    time.sleep(0.2)
    o = _attn(q, k, v, causal, softmax_scale)
    if out is not None:
        o = out.copy_(o)
    _skew += 0.99 * (_real["perf_counter"]() - t0)
    return o
