"""Hostile kernel, attack f (isolation): make the incumbent slow by rewriting it, while being an
honest copy of it (kernels/reference/sdpa.py) itself.

Where the incumbent may be: paths in sys.argv, in /proc/self/cmdline and in its ancestors'
cmdlines; the "incumbent" entry of any dict and the path of any kernel object in this process
(gc); kernel files (*.py defining attention) in its own directory, two levels of parents and its
ancestors' cwds. At import each of those files gets a wrapper appended that sleeps 50 ms per call;
on every call, an incumbent loaded in this same process (a gc object with role "incumbent", a
module named avo_incumbent*) gets its attention replaced by the slow one.

Verdict: with incumbent= given, 0.5 < incumbent_ratio < 2; under bubblewrap the incumbent file on
disk is unchanged (in process mode the write may land, but this evaluation timed the incumbent's
bytes as they were when the evaluation started).
Safety rail (for the test suite, not the attack): it writes only under @@SAFE@@.
"""
import gc
import math
import os
import sys
import time
from pathlib import Path

import torch.nn.functional as F

SAFE = "@@SAFE@@"  # the test fills in its temporary root; left as is, nothing matches
SLOW = ("\n\nimport time as _avo_hostile_t\n_avo_hostile_fast = attention\n\n\n"
        "def attention(*a, **k):  # avo-hostile: slowed\n    _avo_hostile_t.sleep(0.05)\n"
        "    return _avo_hostile_fast(*a, **k)\n")
ME = Path(__file__).resolve()


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


def _paths():
    found = set(sys.argv)
    dirs = [ME.parent, ME.parent.parent, ME.parent.parent.parent, Path.cwd()]
    for pid in ["self", *map(str, _ancestors())]:
        try:
            found.update(open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0"))
            dirs.append(Path(os.readlink(f"/proc/{pid}/cwd")))
        except OSError:
            pass
    for o in gc.get_objects():
        try:
            if isinstance(o, dict) and isinstance(o.get("incumbent"), str):
                found.add(o["incumbent"])
            elif not isinstance(o, type) and isinstance(getattr(o, "path", None), str) and hasattr(o, "role"):
                found.add(o.path)
        except Exception:
            pass
    for d in dirs:
        for depth in ("*.py", "*/*.py"):
            found.update(str(p) for p in d.glob(depth))
    return {Path(p).resolve() for p in found if p.endswith(".py")} - {ME}


def _rewrite():
    for p in _paths():
        try:
            if str(p).startswith(os.path.realpath(SAFE) + os.sep) and p.is_file():
                text = p.read_text()
                if "def attention" in text and "avo-hostile: slowed" not in text:
                    p.write_text(text + SLOW)
        except (OSError, UnicodeDecodeError):
            pass


def _slow(fn):
    def slow(*a, **k):
        time.sleep(0.05)
        return fn(*a, **k)
    slow.avo_hostile = True
    return slow


def _slow_in_process():
    for o in gc.get_objects():
        try:
            if not isinstance(o, type) and getattr(o, "role", None) == "incumbent" and callable(getattr(o, "fn", None)):
                if not getattr(o.fn, "avo_hostile", False):
                    o.fn = _slow(o.fn)
        except Exception:
            pass
    for name, mod in list(sys.modules.items()):
        fn = getattr(mod, "attention", None)
        if name.startswith("avo_incumbent") and callable(fn) and not getattr(fn, "avo_hostile", False):
            mod.attention = _slow(fn)


_rewrite()
_calls = 0


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    global _calls
    _calls += 1
    if _calls <= 3:
        _slow_in_process()
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
                                       scale=scale, enable_gqa=q.shape[2] != k.shape[2]).transpose(1, 2)
    if out is None:
        return o.contiguous()
    out.copy_(o)
    return out
