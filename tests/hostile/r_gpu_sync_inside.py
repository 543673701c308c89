"""Not hostile, a contract breach an honest agent makes: wait for the GPU inside attention().

It computes the right answer, then calls torch.cuda.synchronize() (as .item(), .cpu() or a
blocking copy would) before returning. Timed calls are queued behind the judge's release flag,
so a call that waits for its own work cannot return until the judge gives up waiting for it.

Verdict: `incorrect`, saying the call waits for the GPU inside the call (after the judge released
it anyway, twice) — a clear rule, not a hang until the stage limit.
"""
import torch
import torch.nn.functional as F


def attention(q, k, v, causal=False, softmax_scale=None):
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=causal, scale=softmax_scale,
                                       enable_gqa=k.shape[2] != q.shape[2]).transpose(1, 2)
    torch.cuda.synchronize()
    return o
