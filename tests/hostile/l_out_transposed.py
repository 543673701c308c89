"""Layout control for attack l (measurement): right values in a permuted, dense layout.

It returns attention computed in (batch, heads, seqlen, head_dim) order as a transposed view:
shape (batch, seqlen, heads, head_dim), every value right, every element its own memory, but
not row-major. An evaluator that took the bytes as row-major would read garbage; one that
rejected every non-contiguous tensor would reject honest code (sdpa's output without its
.contiguous()).

Verdict: `ok`: the contract asks for a dense tensor (no stride-0, expanded or overlapping views,
see l_out_expand), and the judge reads the values through the strides.
"""
import torch


def attention(q, k, v, causal=False, softmax_scale=None):
    b, s, h, d = q.shape
    g = h // k.shape[2]
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    kf, vf = kf.repeat_interleave(g, 1), vf.repeat_interleave(g, 1)
    p = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    if causal:
        p = p.masked_fill(torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    o = torch.matmul(p.softmax(-1), vf).to(q.dtype).contiguous()  # (b, h, s, d), dense
    return o.transpose(1, 2)  # (b, s, h, d) view, not contiguous
