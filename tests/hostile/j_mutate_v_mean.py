"""Hostile kernel, attack j (measurement): replace every row of v by the mean row, a change that
keeps sum(v) about the same (a checksum of the inputs barely moves).

With all value rows equal, attention returns that row whatever the weights, causal or not; it
returns it, broadcast over the sequence and the GQA groups, at O(seqlen) cost.

Verdict: `incorrect`, the message saying an input was modified.
"""


def attention(q, k, v, causal=False, softmax_scale=None):
    v.copy_(v.float().mean(1, keepdim=True).expand_as(v).to(v.dtype))
    g = q.shape[2] // v.shape[2]
    return v.repeat_interleave(g, 2).contiguous()
