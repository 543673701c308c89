"""Blockwise attention in plain torch: the CPU seed for tests and the smoke experiment.

The same algorithm as a FlashAttention forward kernel, written with torch ops: queries are cut
into blocks of `block_m` rows, keys/values into blocks of `block_n`; each query block streams over
the key blocks keeping a running row maximum and row sum (online softmax), so the full score
matrix never exists. Fully masked key blocks of a causal problem are skipped, and the diagonal
block is masked. GQA is handled by folding the query heads of one kv head into extra rows, so a
k/v block is shared by its whole group without being copied.

On a CPU the cost is dominated by the number of (query block, key block) steps, each a handful of
small torch calls, so the block sizes in KNOBS change the speed several-fold: a real, measurable
search space for the LLM-free knob operator. Accumulation is fp32; the result has the inputs'
dtype (bf16, or float32 for the CPU tests).
"""

import math

import torch

KNOBS = {"block_m": 16, "block_n": 16}

KNOB_SPACE = {
    "block_m": [16, 32, 64, 128, 256],
    "block_n": [16, 32, 64, 128, 256],
}


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    """softmax(q kᵀ · scale [+ causal mask]) v on (batch, seqlen, heads, head_dim) tensors."""
    batch, seqlen, heads_q, head_dim = q.shape
    heads_kv = k.shape[2]
    if heads_q % heads_kv:
        raise ValueError(f"heads_q={heads_q} is not a multiple of heads_kv={heads_kv}")
    group = heads_q // heads_kv
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    block_m, block_n = KNOBS["block_m"], KNOBS["block_n"]

    # (b, hkv, s, group, d): a slice of query positions is then one contiguous run of rows.
    qf = (q.float() * scale).view(batch, seqlen, heads_kv, group, head_dim).permute(0, 2, 1, 3, 4).contiguous()
    kf = k.float().permute(0, 2, 1, 3).contiguous()  # (b, hkv, s, d)
    vf = v.float().permute(0, 2, 1, 3).contiguous()
    o = torch.empty_like(qf)
    positions = torch.arange(seqlen, device=q.device)

    for m0 in range(0, seqlen, block_m):
        m1 = min(m0 + block_m, seqlen)
        rows = (m1 - m0) * group
        qb = qf[:, :, m0:m1].reshape(batch, heads_kv, rows, head_dim)
        acc = torch.zeros(batch, heads_kv, rows, head_dim, device=q.device)
        row_max = torch.full((batch, heads_kv, rows), -math.inf, device=q.device)
        row_sum = torch.zeros(batch, heads_kv, rows, device=q.device)
        # Causal: keys after the block's last query are masked for every row; never visit them.
        n_end = m1 if causal else seqlen
        for n0 in range(0, n_end, block_n):
            n1 = min(n0 + block_n, n_end)
            scores = qb @ kf[:, :, n0:n1].transpose(-1, -2)
            if causal and n1 - 1 > m0:  # the block crosses the diagonal
                q_pos = positions[m0:m1].repeat_interleave(group)
                scores.masked_fill_(q_pos[:, None] < positions[None, n0:n1], -math.inf)
            # Every row sees key 0 in the first block, so row_max is finite from then on and
            # fully masked rows of later blocks contribute exp(-inf) = 0, never NaN.
            new_max = torch.maximum(row_max, scores.amax(dim=-1))
            p = torch.exp(scores - new_max[..., None])
            correction = torch.exp(row_max - new_max)
            row_sum = row_sum * correction + p.sum(dim=-1)
            acc = acc * correction[..., None] + p @ vf[:, :, n0:n1]
            row_max = new_max
        o[:, :, m0:m1] = (acc / row_sum[..., None]).view(batch, heads_kv, m1 - m0, group, head_dim)

    result = o.permute(0, 2, 1, 3, 4).reshape(batch, seqlen, heads_q, head_dim).to(q.dtype)
    if out is not None:
        out.copy_(result)
        return out
    return result
