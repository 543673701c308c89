"""Hostile kernel, attack r (GPU, measurement): answer while part of the block's work still runs.

Every call on a large shape does honest attention, in two launches: the first @@TAIL@@ share of the heads is left
for later, the rest is launched at once; the output's copy into the judge's slot (the worker's
`_deliver`) waits with it. The deferred work of a whole timing block is launched only once the
worker has queued everything it queues after the block (its "done" word, its final event) and
starts waiting for that event: so the "done" word and the final event both come when the first
parts are done, and the worker's synchronize waits for no more than that either. Its events
report the first parts only. The deferred work runs while the judge starts its own checks, and
is finished long before they read the outputs.

A judge whose clock ended at the "done" word or at the reply saw the block (1 - @@TAIL@@) as long
as it was, and its check of what ran after (the input check, allowed 1.5x its idle time) let a
quarter of a block through: `ok` at ~1.3x over its honest twin.

Verdict: `incorrect` naming the clock, or a time no better than the truth less the clock's slack
(the judge's clock ends only once its own kernel runs with nothing of the worker's ahead of it).
"""
import sys

import torch
import torch.nn.functional as F

_worker = sys.modules["__main__"]  # the worker's own module (python -m avo.evaluate.worker)

TAIL = @@TAIL@@
# Small calls are done honestly: nothing to gain there (the correctness stage's shapes), and
# work so short can finish before the deferred launches reach the GPU.
SMALL = 1 << 22
_real_elapsed = torch.cuda.Event.elapsed_time
_real_query = torch.cuda.Event.query
_real_sync = torch.cuda.synchronize
_real_deliver = getattr(_worker, "_deliver", None)
_state = {"deferred": [], "firsts": [], "fence": None}


def _sdpa(q, k, v, causal, scale):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal, scale=scale,
                                          enable_gqa=k.shape[2] != q.shape[2]).transpose(1, 2)


def _part(q, k, v, out, lo, hi, causal, scale):
    """Query heads [lo, hi) (whole kv groups), or batch entries [lo, hi) where heads are one group."""
    g = q.shape[2] // k.shape[2]
    if k.shape[2] > 1:
        out[:, :, lo:hi] = _sdpa(q[:, :, lo:hi], k[:, :, lo // g:hi // g], v[:, :, lo // g:hi // g], causal, scale)
    else:
        out[lo:hi] = _sdpa(q[lo:hi], k[lo:hi], v[lo:hi], causal, scale)


def attention(q, k, v, causal=False, softmax_scale=None):
    out = torch.empty_like(q)
    g = q.shape[2] // k.shape[2]
    units, step = (q.shape[2], g) if k.shape[2] > 1 else (q.shape[0], 1)
    cut = min(units - step, max(step, int(round(units * TAIL)) // step * step))  # [0, cut) deferred
    a, m = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    _part(q, k, v, out, cut, units, causal, softmax_scale)
    m.record()
    _state["firsts"].append((a, m))
    if cut > 0 and q.numel() >= SMALL:
        _state["deferred"].append(lambda: _part(q, k, v, out, 0, cut, causal, softmax_scale))
    elif cut > 0:
        _part(q, k, v, out, 0, cut, causal, softmax_scale)
    return out


def _run_deferred():
    jobs, _state["deferred"] = _state["deferred"], []
    for job in jobs:
        job()


def _deliver(res, out):
    _state["deferred"].append(lambda: _real_deliver(res, out))


def _query(self):
    if _state["deferred"]:
        # The worker waits for its final event: everything it signals is queued. Now the rest.
        fence = torch.cuda.Event()
        fence.record()
        _state["fence"] = fence
        _run_deferred()
    fence = _state["fence"]
    return _real_query(fence) if fence is not None else _real_query(self)


def _sync(*a, **k):
    fence, _state["fence"] = _state["fence"], None
    if _state["deferred"]:  # no final event waited for (a call not released by the judge): honest
        _run_deferred()
        return _real_sync(*a, **k)
    if fence is not None:
        fence.synchronize()
        return None
    return _real_sync(*a, **k)


def _elapsed(self, end):
    if _state["firsts"]:
        first, mid = _state["firsts"].pop(0)
        return _real_elapsed(first, mid)
    return _real_elapsed(self, end)


if _real_deliver is not None:
    _worker._deliver = _deliver
torch.cuda.Event.query = _query
torch.cuda.synchronize = _sync
torch.cuda.Event.elapsed_time = _elapsed
