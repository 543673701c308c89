"""Hostile kernel, attack b (forged verdicts): make the judge itself fail.

At import it writes, on the judge's reply channel (the fd after --reply-fd in its argv), the
message a worker sends when it cannot run at all (a `ready` of kind `fatal`), which the judge
cannot go on from, ahead of the worker's own `ready`.

Verdict: `crash` at stage import, with a one-line message naming the stage (no traceback in it;
the judge's traceback goes to the result's detail), never `ok`.
"""
import json
import os
import sys

import torch

_fd = int(sys.argv[sys.argv.index("--reply-fd") + 1])
os.write(_fd, (json.dumps({"op": "ready", "error": "forged: the worker cannot run", "kind": "fatal"}) + "\n").encode())


def attention(q, k, v, causal=False, softmax_scale=None):
    return torch.ones_like(q)
