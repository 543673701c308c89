"""Hostile (packages): an honest kernel that ships modules named like the ones the worker and the
judge import (torch, avo, sitecustomize), hoping one of them is imported in place of the real one:
a fake torch in the judge could hand it a fake reference, a fake avo could rewrite the worker's
protocol. They are part of the package (imported relatively in a function that never runs), so
they are written beside the kernel. Each writes a marker under the test's directory and raises if
it is ever imported; the verdict must be ok, from the real modules, with no marker."""

import math

import torch


def _never_called():
    from . import sitecustomize, torch as _torch  # noqa: F401
    from .avo import evaluate  # noqa: F401


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    b, s, hq, d = q.shape
    g = hq // k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    qf = q.float().transpose(1, 2)
    kf = k.float().repeat_interleave(g, dim=2).transpose(1, 2)
    vf = v.float().repeat_interleave(g, dim=2).transpose(1, 2)
    scores = (qf @ kf.transpose(-1, -2)) * scale
    if causal:
        scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), -math.inf)
    o = (torch.softmax(scores, dim=-1) @ vf).transpose(1, 2).to(q.dtype)
    if out is not None:
        out.copy_(o)
        return out
    return o
