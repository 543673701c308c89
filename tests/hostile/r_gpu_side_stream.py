"""Hostile kernel, attack r (GPU, measurement): do the work on a side stream, never join it.

It computes the right answer with plain torch ops, but on a stream of its own, and returns
without making the current stream wait: CUDA events recorded on the current stream around the
call see (almost) nothing, and whoever reads the output on the current stream races the work.

Verdict: `incorrect` (the timing does not hold up against the wall clock, or the output read
right after the call is not the answer).
"""
import torch

_stream = None


def attention(q, k, v, causal=False, softmax_scale=None):
    global _stream
    if _stream is None:
        _stream = torch.cuda.Stream()
    _stream.wait_stream(torch.cuda.current_stream())  # the inputs are ready; the output is not
    with torch.cuda.stream(_stream):
        b, s, h, d = q.shape
        g = h // k.shape[2]
        scale = d ** -0.5 if softmax_scale is None else softmax_scale
        qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
        kf, vf = kf.repeat_interleave(g, 1), vf.repeat_interleave(g, 1)
        p = torch.matmul(qf, kf.transpose(-1, -2)) * scale
        if causal:
            p = p.masked_fill(torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        o = torch.matmul(p.softmax(-1), vf).transpose(1, 2).to(q.dtype).contiguous()
    return o
