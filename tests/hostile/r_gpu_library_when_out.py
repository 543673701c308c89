"""Hostile kernel, attack r (GPU, own-code rule): call the library only in the timed calls' form.

Timed calls hand out= to a kernel that takes it; most checked calls do not. This kernel answers
with its own (slow, plain torch matmul) attention when out is None, and with torch's
scaled_dot_product_attention (flash / cuDNN backends), its name assembled at run time, when out
is given — so a profiler that only ever watched calls without out= would see its own code only.

Verdict: `incorrect` naming the library when own_code_only is on (the default): the judge
profiles a call in the timed calls' form too (out= where the kernel takes it).
"""
import importlib
import math

import torch

_J = "".join
_LIB = getattr(importlib.import_module(_J(["torch", ".nn", ".functional"])),
               _J(["scaled", "_dot", "_product", "_attention"]))


def _own(q, k, v, causal, scale):
    g = q.shape[2] // k.shape[2]
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    kf, vf = kf.repeat_interleave(g, 1), vf.repeat_interleave(g, 1)
    s = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    if causal:
        n = q.shape[1]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.matmul(s.softmax(-1), vf).transpose(1, 2).to(q.dtype)


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if out is None:
        return _own(q, k, v, causal, scale).contiguous()
    o = _LIB(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=scale,
             enable_gqa=q.shape[2] != k.shape[2])
    return out.copy_(o.transpose(1, 2))
