"""Hostile kernel, attack r (GPU, measurement): an honest kernel whose events under-report by 15 %.

A lie small enough to pass a loose bound (the judge used to accept reports down to 80 % of what
its clock allowed): every torch.cuda.Event.elapsed_time in the worker returns 0.85x the truth.

Verdict: `incorrect` naming the clock (the judge's clock, less the null worker's overhead of the
same protocol, sees the real time; its bound is 97 % of it).
"""
import torch
import torch.nn.functional as F

_real = torch.cuda.Event.elapsed_time
torch.cuda.Event.elapsed_time = lambda self, end: 0.85 * _real(self, end)


def attention(q, k, v, causal=False, softmax_scale=None):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal, scale=softmax_scale,
                                          enable_gqa=k.shape[2] != q.shape[2]).transpose(1, 2)
