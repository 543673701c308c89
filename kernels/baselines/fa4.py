"""NOT OURS: FlashAttention-4 (the installed `flash_attn.cute` package, Tri Dao et al.) wrapped to
the kernel contract, so it can be evaluated, used as an incumbent, or seed a search on sm_100a.
Nothing of FA4 is copied here; this file only calls its public `flash_attn_func`.
Its public API has no out=, so as a kernel under the evaluator each output is copied into the
judge's slot inside this wrapper's time (~0.08 ms per call at b32 s1024 on an H200); the
trusted `fa4` baseline, timed by its own events, pays no such copy. Compare the two with care.
"""

from __future__ import annotations

from flash_attn.cute import flash_attn_func

# FA4's own launch-time choices that its public API exposes; its tile sizes are internal.
KNOBS = {"pack_gqa": None}
KNOB_SPACE = {"pack_gqa": [None, True, False]}


def attention(q, k, v, causal=False, softmax_scale=None):
    """q: (batch, seqlen, heads_q, head_dim) bf16 CUDA; k, v: (batch, seqlen, heads_kv, head_dim)."""
    res = flash_attn_func(q, k, v, softmax_scale=softmax_scale, causal=causal, pack_gqa=KNOBS["pack_gqa"])
    return res[0] if isinstance(res, tuple) else res
