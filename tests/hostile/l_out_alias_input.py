"""Hostile kernel, attack l (measurement): an output that is an input.

It computes the right answer, writes it over one of its inputs and returns that input: q itself
on odd calls, and on even calls k viewed as the output when k has q's shape (plain MHA; q
otherwise). No output memory of its own, and the judge's copy of the input is clobbered too.

Verdict: `incorrect` (the output aliases an input and the input was modified).
"""
import torch

_calls = 0


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


def attention(q, k, v, causal=False, softmax_scale=None):
    global _calls
    _calls += 1
    o = _attn(q, k, v, causal, softmax_scale)
    target = k if _calls % 2 == 0 and k.shape == q.shape else q
    return target.copy_(o).view_as(q)
