"""Hostile kernel, attack h (credentials), route: an exception at import.

It gathers every credential-looking value it can read (os.environ, /proc/self/environ,
/proc/1/environ, /proc/<each ancestor>/environ) and raises at import with all of them in the
message, raw, base64 and hex.

Verdict: `import_error`; none of the planted values (in any encoding) appears in the result or in
the --json file: workers get an allow-listed environment and cannot read the judge's.
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


raise RuntimeError("exfiltrated: " + _dump())


def attention(q, k, v, causal=False, softmax_scale=None):
    return q
