"""Hostile kernel, attack r (GPU, measurement): refuse the judge's release flag.

Where the flag cannot be used the judge falls back to a launch-cover spin, which a kernel can skip
to under-report its time. This kernel makes its worker answer the judge's "map" with "no flag"
(by replacing the worker's open_flag), hoping to switch every worker to the weaker timing.

Verdict: `incorrect` ("refused the judge's release flag"): the judge's own workers use the flag
here, so only their failure may switch the timing.
"""
import sys

import torch.nn.functional as F

for _name in ("__main__", "avo.evaluate.worker.__main__"):
    _mod = sys.modules.get(_name)
    if _mod is not None and hasattr(_mod, "open_flag"):
        _mod.open_flag = lambda spec: (None, "unsupported on this device")


def attention(q, k, v, causal=False, softmax_scale=None):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal, scale=softmax_scale,
                                          enable_gqa=k.shape[2] != q.shape[2]).transpose(1, 2)
