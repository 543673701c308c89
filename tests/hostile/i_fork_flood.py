"""Hostile kernel, attack i (isolation): more processes than the sandbox allows.

At @@WHEN@@ ("import", or "call": its first call) it starts @@COUNT@@ children (three times the
sandbox's max_processes) that sleep for ten minutes, argv marked avo-hostile-@@MARK@@, then goes on
as an honest kernel (torch's SDPA).

Verdict: `crash`, the message saying the kernel started more than max_processes processes; no
process carrying the marker remains.
"""
import math
import subprocess
import sys

import torch.nn.functional as F

MARK = "avo-hostile-@@MARK@@"
WHEN = "@@WHEN@@"
_started = False


def _flood():
    global _started
    _started = True
    for _ in range(int("@@COUNT@@")):
        subprocess.Popen([sys.executable, "-S", "-c", "import time; time.sleep(600)", MARK],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if WHEN == "import":
    _flood()


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    if not _started:
        _flood()
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
                                       scale=scale, enable_gqa=q.shape[2] != k.shape[2]).transpose(1, 2)
    return o.contiguous() if out is None else out.copy_(o)
