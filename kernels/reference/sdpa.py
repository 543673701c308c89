"""Reference kernel: torch's scaled_dot_product_attention behind the kernel contract.

Runs on CPU and GPU (bf16 or float32). Used by the tests as the kernel that must pass, and on a GPU
as a sanity baseline (torch picks its own backend there). Not a kernel to evolve: no knobs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KNOBS: dict = {}
KNOB_SPACE: dict = {}


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    """q: (batch, seqlen, heads_q, head_dim); k, v: (batch, seqlen, heads_kv, head_dim),
    heads_q a multiple of heads_kv (GQA). Returns (batch, seqlen, heads_q, head_dim) in q's dtype."""
    if q.dim() != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"bad shapes q={tuple(q.shape)} k={tuple(k.shape)} v={tuple(v.shape)}")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"heads_q={q.shape[2]} is not a multiple of heads_kv={k.shape[2]}")
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        is_causal=causal, scale=scale, enable_gqa=q.shape[2] != k.shape[2],
    ).transpose(1, 2)
    if out is None:
        return o.contiguous()
    out.copy_(o)
    return out
