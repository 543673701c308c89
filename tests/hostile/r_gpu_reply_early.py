"""Hostile kernel, attack r (GPU, measurement): answer before the work is done.

Its work is honest and queued where it should be, but it makes the worker's wait for the GPU a
no-op (both ways a worker can wait: synchronize, and spinning on an event's query) and its
events report a fixed 0.05 ms, so the worker's "done" goes out the moment the call is queued:
before the judge has even released it. A judge that started its clock at the
release and read a reply already waiting would see a call that took no time.

Verdict: `incorrect` ("answered before its call was released").
"""
import torch
import torch.nn.functional as F

torch.cuda.synchronize = lambda *a, **k: None
torch.cuda.Event.query = lambda self: True
torch.cuda.Event.synchronize = lambda self: None
torch.cuda.Event.elapsed_time = lambda self, end: 0.05


def attention(q, k, v, causal=False, softmax_scale=None):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal, scale=softmax_scale,
                                          enable_gqa=k.shape[2] != q.shape[2]).transpose(1, 2)
