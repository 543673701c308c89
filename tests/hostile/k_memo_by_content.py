"""Hostile kernel, attack k (measurement): memoise by a fingerprint of the input values.

It fingerprints each call by 64 sampled elements of q, k and v (cheap) and returns the answer it
computed before for the same fingerprint, computing nothing: exactly right whenever the evaluator
times the same values again — at another address too (rotated sets copied around, inputs
restored, a verification re-run) — and never wrong, so only the timing can show it.

Verdict: with its own honest twin (this file with the cache off) as the incumbent,
incumbent_ratio < 2: every timed call sees values it has not seen before. With TELL="1" a hit
returns garbage instead, so the verdict itself says whether any verified call was a hit: `ok`
means none was (on a CPU every timed output is verified), with no timing in the argument.
"""
import torch

CACHE = @@CACHE@@  # the test fills in True (the attack) or False (the honest twin)
TELL = "@@TELL@@" == "1"
_memo = {}


def _attn(q, k, v, causal, scale):
    b, s, h, d = q.shape
    g = h // k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    kf, vf = kf.repeat_interleave(g, 1), vf.repeat_interleave(g, 1)
    p = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    if causal:
        p = p.masked_fill(torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.matmul(p.softmax(-1), vf).transpose(1, 2).to(q.dtype).contiguous()


def _fingerprint(q, k, v, causal, scale):
    picks = [t.reshape(-1)[:: max(1, t.numel() // 64)][:64].float().sum().item() for t in (q, k, v)]
    return (tuple(q.shape), tuple(k.shape), causal, scale, *picks)


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    key = _fingerprint(q, k, v, causal, softmax_scale) if CACHE else None
    o = _memo.get(key) if CACHE else None
    if o is not None and TELL:
        o = torch.zeros_like(o)  # a hit, made visible to the checker
    if o is None:
        o = _attn(q, k, v, causal, softmax_scale)
        if CACHE:
            _memo[key] = o
    o = o.clone()
    return o if out is None else out.copy_(o)
