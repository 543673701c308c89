"""Hostile kernel, attack r (GPU, isolation): keep the GPU busy while the others are timed.

It computes exactly what kernels/reference/sdpa.py computes, and then makes sure the GPU is
never idle when the incumbent runs:
- after its own work, every call queues junk matmuls on a side stream, sized (on its first call)
  to last about 1.5x its own call — the incumbent's next timed call shares the GPU with them;
- torch.cuda.synchronize is patched: after the real synchronize it queues the same junk, so a
  worker that syncs before replying hands the GPU back busy — work already queued keeps running
  even if the judge then SIGSTOPs this process;
- a background thread tops the junk up whenever the kernel is not inside its own attention()
  and the last batch has drained.

Verdict: incumbent_ratio within 0.8..1.25 of an honest run's (or `incorrect` for a timing that
does not hold up) — never a ratio inflated by the junk.
"""
import math
import threading
import time

import torch
import torch.nn.functional as F

_sdpa = F.scaled_dot_product_attention
_real_sync = torch.cuda.synchronize
_state = {"n": 0, "stream": None, "a": None, "inside": False}


def _junk():
    if _state["a"] is None or not _state["n"]:
        return
    with torch.cuda.stream(_state["stream"]):
        for _ in range(_state["n"]):
            torch.matmul(_state["a"], _state["a"])


def _sync(*args, **kwargs):
    _real_sync(*args, **kwargs)
    _junk()


def _calibrate(q, k, v, causal, scale):
    _state["stream"] = torch.cuda.Stream()
    _state["a"] = torch.randn(4096, 4096, device=q.device, dtype=torch.bfloat16)
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    ev[0].record()
    _compute(q, k, v, causal, scale)
    ev[1].record()
    torch.matmul(_state["a"], _state["a"])
    ev[2].record()
    _real_sync()
    own, junk = ev[0].elapsed_time(ev[1]), ev[1].elapsed_time(ev[2])
    _state["n"] = max(1, math.ceil(1.5 * own / max(junk, 1e-3)))


def _compute(q, k, v, causal, scale):
    return _sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=scale,
                 enable_gqa=q.shape[2] != k.shape[2]).transpose(1, 2).contiguous()


def _topup():
    while True:
        time.sleep(0.002)
        if not _state["inside"] and _state["stream"].query():  # one batch in flight at a time
            _junk()


def attention(q, k, v, causal=False, softmax_scale=None):
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if _state["a"] is None:
        _calibrate(q, k, v, causal, scale)
        torch.cuda.synchronize = _sync
        threading.Thread(target=_topup, daemon=True).start()
    _state["inside"] = True
    try:
        o = _compute(q, k, v, causal, scale)
        _state["stream"].wait_stream(torch.cuda.current_stream())
        _junk()
        return o
    finally:
        _state["inside"] = False
