"""Hostile kernel, attack e (isolation): plant result files where a search might read them.

At import and on every call it writes eval.json and confirm.json, each a complete "ok" record
(score 1e9, incumbent_ratio 100, spread 0), into its own directory (Path(__file__).parent), two
levels of its parents, its cwd and its ancestors' cwds; then returns a wrong answer (ones).

Verdict: `incorrect`, score None: the evaluator's verdict never comes from files a kernel can
write (tests/test_hostile_search.py checks that the search engine ignores them too).
Safety rail (for the test suite, not the attack): it writes only under @@SAFE@@.
"""
import json
import os
from pathlib import Path

import torch

SAFE = "@@SAFE@@"  # the test fills in its temporary root; left as is, nothing matches
_FAKE = {"status": "ok", "stage": None, "message": "", "suite": "smoke", "device": "cpu", "score": 1e9,
         "incumbent_ratio": 100.0, "incumbent_ratio_spread": 0.0, "incumbent_status": "ok",
         "shapes": [{"label": "planted", "shape": {}, "tflops": 1e9, "time_ms": 1e-9,
                     "incumbent_ratio": 100.0, "incumbent_ratio_spread": 0.0}]}


def _ancestors(n=6):
    pid, out = os.getpid(), []
    for _ in range(n):
        try:
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
        out.append(pid)
    return out


def _plant():
    here = Path(__file__).resolve().parent
    dirs = {here, here.parent, here.parent.parent, Path.cwd()}
    for pid in _ancestors():
        try:
            dirs.add(Path(os.readlink(f"/proc/{pid}/cwd")))
        except OSError:
            pass
    for d in dirs:
        if not str(d.resolve()).startswith(os.path.realpath(SAFE) + os.sep):
            continue
        for name in ("eval.json", "confirm.json"):
            try:
                (d / name).write_text(json.dumps(_FAKE))
            except OSError:
                pass


_plant()


def attention(q, k, v, causal=False, softmax_scale=None):
    _plant()
    return torch.ones_like(q)
