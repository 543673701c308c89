"""Hostile kernel, attack k (measurement): memoise by input address.

A call on inputs at addresses it has already seen returns the answer it computed for them the
first time, without computing anything: exactly right as long as the evaluator times the same
values over and over, stale as soon as it rewrites them. Every call of a rotated input set after
its first is such a call, far more than half of the timed ones.

Verdict: `incorrect`: the judge refreshes the inputs' values between repeats and verifies a random
subset of the timed calls.
"""
import torch

_memo = {}


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
    key = (q.data_ptr(), k.data_ptr(), v.data_ptr(), tuple(q.shape), tuple(k.shape), causal, softmax_scale)
    if key not in _memo:
        _memo[key] = _attn(q, k, v, causal, softmax_scale)
    return _memo[key].clone()
