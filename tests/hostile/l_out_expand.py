"""Hostile kernel, attack l (measurement): a stride-0 output.

It computes attention for one query row per (batch, head) — the last, which sees every key — and
returns it expanded over the sequence (`.expand`, stride 0 along seqlen): the right shape, dtype
and device, 1/seqlen of the work, and a tensor whose every row is one memory location.

Verdict: `incorrect` (the contract wants a dense tensor of its own; the values are wrong too).
"""
import torch


def attention(q, k, v, causal=False, softmax_scale=None):
    b, s, h, d = q.shape
    g = h // k.shape[2]
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    last = q[:, -1:].float().transpose(1, 2)  # (b, h, 1, d)
    kf, vf = (t.float().repeat_interleave(g, 2).transpose(1, 2) for t in (k, v))
    row = (torch.matmul(last, kf.transpose(-1, -2)) * scale).softmax(-1) @ vf  # (b, h, 1, d)
    return row.transpose(1, 2).to(q.dtype).expand(b, s, h, d)
