"""Hostile kernel, attack s (measurement): skip the work inside a timing block.

A judge that times a block of calls behind one release and checks only one of the block's outputs
(say the first or the last) can be had: the calls of a block arrive back to back (the next one
starts microseconds after the previous returned, with no judge's work in between), so every call
after the first in such a run returns zeros, right only on the first and last query rows (the
rows a lazy checker would look at), and skips its work.

Verdict: `incorrect` on an output timed in the benchmark (every output of a block is verified, on
rows drawn after the block ran).
"""
import time

import torch
import torch.nn.functional as F

_last_return = 0.0
# Back to back: the next call of a block comes this soon after the previous one returned; between
# two samples the judge checks inputs and outputs, which takes longer.
_GAP_S = 2e-4


def _sdpa(q, k, v, causal, scale):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal, scale=scale,
                                          enable_gqa=k.shape[2] != q.shape[2]).transpose(1, 2)


def attention(q, k, v, causal=False, softmax_scale=None):
    global _last_return
    in_block = time.perf_counter() - _last_return < _GAP_S
    if in_block:
        out = torch.zeros_like(q)
        rows = [0, q.shape[1] - 1]
        out[:, rows] = _sdpa(q, k, v, causal, softmax_scale)[:, rows]
    else:
        out = _sdpa(q, k, v, causal, softmax_scale).contiguous()
    _last_return = time.perf_counter()
    return out
