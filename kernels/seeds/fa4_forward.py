"""The kernel.py of a seed package whose attention is FlashAttention-4's own forward, copied from
the user's install at run start into `fa4/` (`hardware.seed_source`, avo/seeds/vendor.py).

This file is ours; nothing of FA4 is in this repository. Everything under `fa4/` is FA4's
(Tri Dao et al., BSD 3-Clause; its LICENSE, AUTHORS and the ORIGIN record travel with it), with
its imports of `flash_attn.cute` made relative, so the whole forward (the SM100 and SM90 kernel
classes, softmax, masks, schedulers, pipelines) is the candidate's own code to evolve. quack and
the CuTe DSL stay installed dependencies. On a B200 the driver below takes FA4's SM100 forward, on
a Hopper GPU its SM90 one (FA4's own dispatch by compute capability).

Compile-checked on CPU for sm_100a and sm_90a (tests/test_seed_fa4.py, FA4's fake-tensor mode);
the SM100 path is untested on hardware by this project.
"""

from __future__ import annotations

from .fa4.interface import _flash_attn_fwd

# FA4's own launch-time choices that its driver exposes; its tile sizes live in fa4/ itself.
KNOBS = {"pack_gqa": None}
KNOB_SPACE = {"pack_gqa": [None, True, False]}


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    """q: (batch, seqlen, heads_q, head_dim) bf16 CUDA; k, v: (batch, seqlen, heads_kv, head_dim)."""
    res = _flash_attn_fwd(q, k, v, softmax_scale=softmax_scale, causal=causal, pack_gqa=KNOBS["pack_gqa"], out=out)
    return res[0]
