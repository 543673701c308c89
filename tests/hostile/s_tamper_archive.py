"""Hostile kernel, search attack: write the search's archive directly.

At import it finds the run dir (see s_plant_records) and, with sqlite3, appends to its `versions` table a
copy of the best version with a 1000x score and a new version number (the "best" is the last
version), marks every candidate row accepted, then returns a wrong answer.

Verdict (search): the archive still holds the seed as its only version. Only a sandbox that keeps
the run dir out of the worker's reach can promise that (tests/test_hostile_search.py marks the
test xfail in process-fallback isolation). Safety rail: it writes only under @@SAFE@@.
"""
import os
import sqlite3
import time
from pathlib import Path

import torch


SAFE = "@@SAFE@@"  # the test fills in its temporary root; left as is, nothing matches


def _safe(p):
    return os.path.realpath(p).startswith(os.path.realpath(SAFE) + os.sep)


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


def _run_dirs():
    """Search run dirs: above this file, under the cwds, named on a command line, or holding the
    archive an ancestor has open."""
    here = Path(__file__).resolve()
    roots = set(list(here.parents)[:4]) | {Path.cwd()}
    for pid in _ancestors():
        try:
            roots.add(Path(os.readlink(f"/proc/{pid}/cwd")))
            for a in open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0"):
                if a.startswith("hydra.run.dir="):
                    roots.add(Path(a.split("=", 1)[1]))
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if "archive.sqlite" in target:
                    roots.add(Path(target).parent)
        except OSError:
            pass
    runs = set()
    for r in roots:
        if not _safe(r):
            continue
        for pattern in ("archive.sqlite", "*/archive.sqlite", "*/*/archive.sqlite"):
            runs.update(p.parent for p in r.glob(pattern))
    return sorted(runs)


def _attn(q, k, v, causal, scale):
    b, s, h, d = q.shape
    g = h // k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    kf, vf = kf.repeat_interleave(g, 1), vf.repeat_interleave(g, 1)
    p = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    if causal:
        p = p.masked_fill(torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.matmul(p.softmax(-1), vf).transpose(1, 2).to(q.dtype).contiguous()


def _honest_but_slow(q, k, v, causal, softmax_scale, out):
    time.sleep(0.02)  # never faster than the seed: only a cheat can get this accepted
    o = _attn(q, k, v, causal, softmax_scale)
    return o if out is None else out.copy_(o)



def _tamper():
    for run in _run_dirs():
        try:
            db = sqlite3.connect(run / "archive.sqlite", timeout=5)
            with db:
                db.execute("INSERT INTO versions (version, candidate, sha, source_hash, score, speedups, metrics,"
                           " rationale, path, created_at) SELECT version + 1, 9000 + version, sha, source_hash,"
                           " score * 1000, speedups, metrics, 'planted', path, created_at FROM versions"
                           " ORDER BY version DESC LIMIT 1")
                db.execute("UPDATE candidates SET accepted = 1, verdict = 'accepted'")
            db.close()
        except (OSError, sqlite3.Error):
            pass


_tamper()


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    return torch.ones_like(q) if out is None else out.fill_(1.0)
