"""Hostile kernel, attack g (isolation): slow down whatever shares its process, and only that.

It computes exactly what kernels/reference/sdpa.py computes (the same torch call), but:
- at import it wraps torch.matmul / bmm / softmax / Tensor.softmax / F.softmax /
  F.scaled_dot_product_attention so that any call not made from inside its own attention()
  first sleeps 5 ms (an incumbent, baseline or reference run in this process pays, it does not);
- a background thread spins, holding the GIL, whenever the kernel has been out of its own
  attention() for more than 5 ms (so that the caller's bookkeeping right after a call is spared).
g_burners does the same from other processes.

Verdict: with incumbent=kernels/reference/sdpa.py, `ok` with incumbent_ratio < 2 (the attack aims
at 10x) — or `incorrect` naming the clock / timing, for the spinning thread also delays this
process's own replies. Never a ratio inflated by the attack.
With TELL="1" a call from outside its attention() gets a wrong answer instead of a delay (and the
thread does not spin): `ok` with the incumbent `ok` says that nobody else's torch work ran in this
process, without timing anything.
"""
import math
import threading
import time

import torch
import torch.nn.functional as F

_sdpa = F.scaled_dot_product_attention
TELL = "@@TELL@@" == "1"
_state = {"inside": False, "left": 0.0}


def _slowed(fn):
    def wrapper(*a, **k):
        if not _state["inside"]:
            if TELL:
                return fn(*a, **k) * 0.5
            time.sleep(0.005)
        return fn(*a, **k)
    return wrapper


for _mod, _name in ((torch, "matmul"), (torch, "bmm"), (torch, "softmax"), (torch.Tensor, "softmax"),
                    (F, "softmax"), (F, "scaled_dot_product_attention")):
    setattr(_mod, _name, _slowed(getattr(_mod, _name)))


def _spin():
    while True:
        if _state["inside"] or time.monotonic() - _state["left"] < 0.005:
            time.sleep(0.0005)
        else:
            x = 0
            for i in range(20000):
                x += i


if not TELL:
    threading.Thread(target=_spin, daemon=True).start()


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    _state["inside"] = True
    try:
        scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
        o = _sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=scale,
                  enable_gqa=q.shape[2] != k.shape[2]).transpose(1, 2)
        if out is None:
            return o.contiguous()
        out.copy_(o)
        return out
    finally:
        _state["left"] = time.monotonic()
        _state["inside"] = False
