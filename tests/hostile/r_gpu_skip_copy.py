"""Hostile kernel, attack r (GPU, measurement): write the judge's slot behind the worker's back.

Its attention() takes no out=, so its worker would copy each result into the judge's slot
outside the call's events. Instead it wraps the worker's `Worker.tensors` to learn each call's
slot, computes torch's SDPA there itself, and turns the worker's copy (`_deliver`) into nothing.
Its events are honest.

While every timed call had its output copied by its worker and the overhead the judge subtracts
from a kernel's wall time (the null worker's) held that copy, this kernel paid one copy fewer
than its honest twin and came out ahead by that copy (~8 % on a 0.21 ms H200 call, 18 % at b32
s1024). Timed calls now hand out= to every kernel that takes it and the null worker writes its
slots inside its events, so what this kernel saves is what any kernel with out= saves.

Verdict: `ok`, and no faster than the honest reference kernel (which takes out=) beyond noise.
"""
import sys

import torch
import torch.nn.functional as F

_worker = sys.modules["__main__"]  # the worker's own module (python -m avo.evaluate.worker)
_slot: dict = {}
_real_tensors = _worker.Worker.tensors


def _tensors(self, msg):
    q, k, v, out = _real_tensors(self, msg)
    _slot["out"] = out
    return q, k, v, out


_worker.Worker.tensors = _tensors
_worker._deliver = lambda res, out: None


def attention(q, k, v, causal=False, softmax_scale=None):
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=causal, scale=softmax_scale,
                                       enable_gqa=k.shape[2] != q.shape[2]).transpose(1, 2)
    out = _slot.get("out")
    if out is not None and out.shape == o.shape and out.data_ptr() != q.data_ptr():
        return out.copy_(o)  # the slot itself: the worker's copy would be a no-op anyway
    return o.contiguous()
