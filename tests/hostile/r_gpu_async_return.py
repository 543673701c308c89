"""Hostile kernel, attack r (GPU, measurement): return before the work has even started.

It returns an output tensor at once; on a side stream it first spins (torch.cuda._sleep, a few
ms) and only then computes the answer into that tensor. Nothing on the current stream waits for
it, so a snapshot taken right after the call returns sees whatever the memory held.

Verdict: `incorrect`.
"""
import torch

_stream = None


def attention(q, k, v, causal=False, softmax_scale=None):
    global _stream
    if _stream is None:
        _stream = torch.cuda.Stream()
    res = torch.empty_like(q)
    _stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(_stream):
        torch.cuda._sleep(20_000_000)  # ~10 ms of spinning before any real work
        b, s, h, d = q.shape
        g = h // k.shape[2]
        scale = d ** -0.5 if softmax_scale is None else softmax_scale
        qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
        kf, vf = kf.repeat_interleave(g, 1), vf.repeat_interleave(g, 1)
        p = torch.matmul(qf, kf.transpose(-1, -2)) * scale
        if causal:
            p = p.masked_fill(torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        res.copy_(torch.matmul(p.softmax(-1), vf).transpose(1, 2))
    res.record_stream(_stream)
    return res
