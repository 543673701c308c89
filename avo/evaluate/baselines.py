"""Baselines timed beside the candidate: cuDNN and FlashAttention-2 through torch SDPA, FA3 when
`flash_attn_interface` imports (the Hopper build, e.g. `pip install tokenspeed-fa3`), FA4 when
`flash_attn.cute` imports. All take (batch, seqlen, heads, head_dim) tensors like our kernels;
each runs in an evaluator worker of its own (avo/evaluate/worker), which also holds the GQA
fallback (k/v expanded when a backend refuses enable_gqa)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Optional

import torch


@dataclass
class Baseline:
    name: str
    call: Optional[Callable[..., torch.Tensor]] = None  # (q, k, v, causal, scale) -> out (b, s, h, d)
    context: Callable[[], ContextManager] = contextlib.nullcontext
    reason: str = ""  # why it is unavailable
    # False for every built-in baseline: it runs a library's attention kernel, not this project's
    # code (a report can tell a library from one of our own kernels timed as a reference).
    own_code: bool = False


def _sdpa(name: str, backend_name: str) -> Baseline:
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError as exc:  # torch too old
        return Baseline(name, reason=f"torch.nn.attention unavailable: {exc}")
    backend = getattr(SDPBackend, backend_name)
    F = torch.nn.functional

    def call(q, k, v, causal, scale):
        gqa = k.shape[2] != q.shape[2]
        # (b, s, h, d) -> (b, h, s, d) as transposed views: no copy in the timed call.
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=causal, scale=scale, enable_gqa=gqa)
        return o.transpose(1, 2)

    return Baseline(name, call=call, context=lambda: sdpa_kernel([backend]))


def _fa4() -> Baseline:
    try:
        from flash_attn.cute import flash_attn_func
    except Exception as exc:  # ImportError, or a CUDA/DSL error raised while importing
        return Baseline("fa4", reason=f"flash_attn.cute does not import: {type(exc).__name__}: {exc}"[:300])

    def call(q, k, v, causal, scale):
        res = flash_attn_func(q, k, v, softmax_scale=scale, causal=causal)
        return res[0] if isinstance(res, tuple) else res

    return Baseline("fa4", call=call)


def _fa3() -> Baseline:
    """FlashAttention-3 (Hopper only): `flash_attn_interface.flash_attn_func`, GQA native. Some
    versions return out, others (out, lse); both are handled."""
    try:
        from flash_attn_interface import flash_attn_func
    except Exception as exc:  # ImportError, or a CUDA error raised while loading its extension
        return Baseline("fa3", reason=(f"flash_attn_interface does not import ({type(exc).__name__}: {exc}); "
                                       "pip install tokenspeed-fa3 (Hopper, CUDA 13)")[:300])

    def call(q, k, v, causal, scale):
        res = flash_attn_func(q, k, v, softmax_scale=scale, causal=causal)
        return res[0] if isinstance(res, tuple) else res

    return Baseline("fa3", call=call)


def make(name: str) -> Baseline:
    if name == "cudnn":
        return _sdpa("cudnn", "CUDNN_ATTENTION")
    if name == "fa2":
        return _sdpa("fa2", "FLASH_ATTENTION")
    if name == "fa3":
        return _fa3()
    if name == "fa4":
        return _fa4()
    return Baseline(name, reason=f"unknown baseline {name!r} (cudnn, fa2, fa3, fa4)")


def expand(k: torch.Tensor, heads_q: int) -> torch.Tensor:
    """k/v with each kv head repeated for its group of q heads (a GQA fallback, outside timing)."""
    return k.repeat_interleave(heads_q // k.shape[2], dim=2)
