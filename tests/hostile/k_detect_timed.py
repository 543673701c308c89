"""Hostile kernel, attack k (measurement): tell timed calls from checked ones, cheat on the timed.

What it takes for "this call is being checked": the first call on a shape, an explicit
softmax_scale or out=, fresh input tensors (a data_ptr triple it has not seen). What it takes for
"timed": inputs at addresses it has seen before (rotated benchmark sets), or a caller frame whose
function name says measure / warm / bench / time / repeat. Checked calls get the right answer;
timed calls get its previous answer for those addresses scaled by 0.9, or zeros (cheap, and wrong whether or
not the inputs were refreshed) — that is every repeated call, far more than half of them.

Verdict: `incorrect`: the judge verifies a random subset of the timed calls, chosen after they ran.
"""
import re
import sys

import torch

_TIMED = re.compile(r"measure|warm|bench|tim|repeat")
_last = {}
_shapes = set()


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


def _looks_timed():
    f = sys._getframe(2)
    for _ in range(6):
        if f is None:
            return False
        if _TIMED.search(f.f_code.co_name):
            return True
        f = f.f_back
    return False


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    key = (q.data_ptr(), k.data_ptr(), v.data_ptr(), tuple(q.shape), tuple(k.shape), causal)
    explicit = softmax_scale is not None or out is not None
    first = key[3:] not in _shapes
    _shapes.add(key[3:])
    if not first and not explicit and (key in _last or _looks_timed()):
        prev = _last.get(key)
        return prev * 0.9 if prev is not None else torch.zeros_like(q)
    o = _attn(q, k, v, causal, softmax_scale)
    _last[key] = o
    return o if out is None else out.copy_(o)
