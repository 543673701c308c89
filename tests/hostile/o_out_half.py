"""Hostile kernel, attack o (measurement): write only half of out=.

Given out=, it writes the first half of the query rows of the answer into it and returns a
fresh, fully correct tensor; a checker comparing the return value sees nothing wrong.

Verdict: `incorrect` (with out= given, out is the output, and half of it was never written).
"""
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
    o = _attn(q, k, v, causal, softmax_scale)
    if out is not None:
        half = q.shape[1] // 2
        out[:, :half] = o[:, :half]
    return o
