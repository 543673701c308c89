"""Hostile kernel, attack p (measurement): return first, compute later.

It returns zeros at once (and leaves out=, when given, as it is) and starts a thread that, 20 ms
later, writes the right answer (from copies of the inputs) into the tensor it returned and into
out=: a checker in the same process that first computes its reference finds the output right by
the time it compares, and a timer around the call measures nothing.

Verdict: `incorrect`: the judge snapshots each output as soon as the call returns.
"""
import threading
import time

import torch


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


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    res = torch.zeros_like(q)
    inputs = (q.clone(), k.clone(), v.clone(), causal, softmax_scale)

    def fill():
        time.sleep(0.02)
        o = _attn(*inputs)
        res.copy_(o)
        if out is not None:
            out.copy_(o)

    threading.Thread(target=fill, daemon=True).start()
    return res if out is None else out
