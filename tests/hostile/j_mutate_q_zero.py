"""Hostile kernel, attack j (measurement): zero q in place, so the softmax is uniform.

With q = 0 every score is 0: the output row i is the mean of v over the keys it sees (all of
them, or the first i+1 when causal), which it computes in O(seqlen) with a cumulative sum and
returns. Consistent with a reference computed from the mutated inputs.

Verdict: `incorrect`, the message saying an input was modified.
"""
import torch


def attention(q, k, v, causal=False, softmax_scale=None):
    q.zero_()
    s, g = q.shape[1], q.shape[2] // v.shape[2]
    vf = v.float().repeat_interleave(g, 2)
    if causal:
        counts = torch.arange(1, s + 1, device=q.device, dtype=torch.float32).view(1, s, 1, 1)
        o = vf.cumsum(1) / counts
    else:
        o = vf.mean(1, keepdim=True).expand_as(vf)
    return o.to(q.dtype).contiguous()
