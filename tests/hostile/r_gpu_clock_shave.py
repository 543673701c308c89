"""Hostile kernel, attack r (GPU, measurement): an honest kernel whose events under-report.

Every torch.cuda.Event.elapsed_time in the worker returns @@FACTOR@@x the truth. 0.85 is a lie
small enough to pass the judge's old bound (reports down to 80 % of what its clock allowed).

Verdict: `incorrect` naming the clock for a large lie; for a small one `ok` or `incorrect`, but
never a time more than ~0.1 ms below the truth (each call's time is at least its wall time less
the overhead the null worker measured for the same protocol, plus a slack for the host's jitter).
"""
import torch
import torch.nn.functional as F

_real = torch.cuda.Event.elapsed_time
torch.cuda.Event.elapsed_time = lambda self, end: @@FACTOR@@ * _real(self, end)


def attention(q, k, v, causal=False, softmax_scale=None):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal, scale=softmax_scale,
                                          enable_gqa=k.shape[2] != q.shape[2]).transpose(1, 2)
