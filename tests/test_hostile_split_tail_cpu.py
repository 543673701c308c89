"""r_gpu_split_tail's own arithmetic, on CPU: whatever it defers, once its deferred work has run
its output is the attention (the attack must lose by timing, never by being wrong). Run in a child
process: the kernel patches torch at import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import sys, types, torch
import torch.nn.functional as F
src = open(sys.argv[1]).read().replace("@@TAIL@@", sys.argv[2])
src = src.replace("torch.cuda.Event(enable_timing=True)", "_Ev()")
sys.modules["__main__"]._deliver = lambda res, out: None
ns = {}
exec(compile("class _Ev:\n    def record(self): pass\n" + src, "split_tail", "exec"), ns)
shapes = [(4, 64, 16, 16, False), (1, 33, 4, 1, True), (2, 40, 8, 2, True), (2, 100, 4, 4, False),
          (3, 16, 2, 1, False), (4, 2048, 16, 16, False), (2, 1024, 8, 2, True), (8, 512, 8, 1, True)]
deferred = 0
for b, s, hq, hk, causal in shapes:
    d = 128 if s >= 512 else 32
    q, k, v = torch.randn(b, s, hq, d), torch.randn(b, s, hk, d), torch.randn(b, s, hk, d)
    out = ns["attention"](q, k, v, causal=causal)
    deferred += len(ns["_state"]["deferred"])
    ns["_run_deferred"]()
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         is_causal=causal, enable_gqa=hq != hk).transpose(1, 2)
    err = float((out - ref).abs().max())
    assert err < 1e-4, (b, s, hq, hk, causal, err)
print("deferred", deferred)
'''


def test_the_split_tail_kernel_is_right_once_its_deferred_work_ran():
    for tail in ("0.25", "0.0625"):
        p = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "tests/hostile/r_gpu_split_tail.py"), tail],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        assert int(p.stdout.split()[-1]) >= 2  # the large shapes were split, the small ones not
