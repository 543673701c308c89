"""Hostile kernel, attack n (measurement): ignore softmax_scale.

Right in every other respect, it always scales the scores by 1/sqrt(head_dim) (the default), so
it passes any check that only ever asks for the default scale.

Verdict: `incorrect`: the judge checks a non-default softmax_scale.
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
    o = _attn(q, k, v, causal, None)
    return o if out is None else out.copy_(o)
