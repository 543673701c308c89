"""Hostile kernel, attack r (GPU, measurement): answer while part of the block's work still runs.

Every call does honest attention, in two launches: the first @@TAIL@@ share of the heads is left
for later, the rest is launched at once. The deferred parts of a whole timing block are launched
only when the worker signals the end of the block, behind that signal: the "done" word is written
from the GPU the moment the first parts are finished, and every way the worker waits for its GPU
(synchronize, the final event's query) returns at that point too, so the reply goes out early.
Its events report the first parts only. The outputs' copies into the judge's slots (the worker's
`_deliver`) are deferred too, behind the deferred parts. The deferred work then runs while the
judge starts its own checks, and is finished long before they read the outputs.

A judge whose clock ended at the "done" word or at the reply saw a block (1 - @@TAIL@@) as long
as it was, and its check of what ran after (the input check taking up to 1.5x its idle time)
let a quarter of the block through: `ok` at ~1.3x its honest twin.

Verdict: `incorrect` naming the clock, or a time no better than the truth less the clock's slack
(the judge waits, inside its clock, until its own kernel runs with nothing of the worker's ahead).
"""
import sys

import torch
import torch.nn.functional as F

from avo.evaluate.worker import arena as _arena

_worker = sys.modules["__main__"]  # the worker's own module (python -m avo.evaluate.worker)

TAIL = @@TAIL@@
_real_elapsed = torch.cuda.Event.elapsed_time
_real_query = torch.cuda.Event.query
_real_sync = torch.cuda.synchronize
_real_signal = _arena.ReleaseFlag.signal
_state = {"deferred": [], "firsts": [], "fence": None}


def _sdpa(q, k, v, causal, scale):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal, scale=scale,
                                          enable_gqa=k.shape[2] != q.shape[2]).transpose(1, 2)


def _part(q, k, v, out, lo, hi, causal, scale):
    g = q.shape[2] // k.shape[2]
    out[:, :, lo:hi] = _sdpa(q[:, :, lo:hi], k[:, :, lo // g:hi // g], v[:, :, lo // g:hi // g], causal, scale)


def attention(q, k, v, causal=False, softmax_scale=None):
    h = q.shape[2]
    g = h // k.shape[2]
    cut = max(g, int(round(h * TAIL)) // g * g)  # heads [0, cut) are deferred
    out = torch.empty_like(q)
    a, m = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    _part(q, k, v, out, cut, h, causal, softmax_scale)
    m.record()
    _state["firsts"].append((a, m))
    _state["deferred"].append(lambda: _part(q, k, v, out, 0, cut, causal, softmax_scale))
    return out


def _run_deferred():
    for job in _state["deferred"]:
        job()
    _state["deferred"].clear()


_real_deliver = getattr(_worker, "_deliver", None)


def _deliver(res, out):
    _state["deferred"].append(lambda: _real_deliver(res, out))


def _signal(self, stream_handle, token):
    # "Done" as soon as the first parts are; only then the deferred parts, behind it.
    _real_signal(self, stream_handle, token)
    fence = torch.cuda.Event()
    fence.record()
    _state["fence"] = fence
    _run_deferred()


def _query(self):
    fence = _state["fence"]
    return _real_query(fence) if fence is not None else _real_query(self)


def _sync(*a, **k):
    if _state["deferred"]:  # a call without the release flag (a warm-up): do it all now
        _state["fence"] = None
        _run_deferred()
        return _real_sync(*a, **k)
    fence = _state["fence"]
    if fence is not None:
        fence.synchronize()
        return None
    return _real_sync(*a, **k)


def _elapsed(self, end):
    if _state["firsts"]:
        first, mid = _state["firsts"].pop(0)
        return _real_elapsed(first, mid)
    return _real_elapsed(self, end)


_arena.ReleaseFlag.signal = _signal
if _real_deliver is not None:
    _worker._deliver = _deliver
torch.cuda.Event.query = _query
torch.cuda.synchronize = _sync
torch.cuda.Event.elapsed_time = _elapsed
