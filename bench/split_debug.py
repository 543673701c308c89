"""Why r_gpu_split_tail's outputs were all NaN on small shapes (H200, 2026-12-03): the kernel,
with a log of what its hooks saw, raising that log on its third call (the judge puts the
exception into its message). Prints the message.

    python bench/split_debug.py
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from avo.config import EvaluatorConfig
from avo.evaluate import evaluate
from avo.suites import Shape

ROOT = Path(__file__).resolve().parents[1]
LOG = '''
_log = []
_calls = [0]
_att, _q0, _s0, _d0 = attention, _query, _sync, _deliver
def attention(q, k, v, causal=False, softmax_scale=None):
    _calls[0] += 1
    if _calls[0] == 3:
        raise RuntimeError("LOG " + " | ".join(_log))
    _log.append(f"call{_calls[0]} {tuple(q.shape)} deferred_before={len(_state['deferred'])}")
    return _att(q, k, v, causal, softmax_scale)
def _query(self):
    n = len(_state["deferred"])
    r = _q0(self)
    _log.append(f"query n={n} -> {r}")
    return r
def _sync(*a, **k):
    _log.append(f"sync fence={_state['fence'] is not None} deferred={len(_state['deferred'])}")
    return _s0(*a, **k)
def _deliver(res, out):
    _log.append("deliver")
    return _d0(res, out)
if _real_deliver is not None:
    _worker._deliver = _deliver
torch.cuda.Event.query = _query
torch.cuda.synchronize = _sync
_log.append(f"worker module {_worker.__name__} has _deliver={hasattr(_worker, '_deliver')} real={_real_deliver}")
'''


def main() -> int:
    src = (ROOT / "tests/hostile/r_gpu_split_tail.py").read_text().replace("@@TAIL@@", "0.25").replace("SMALL = 1 << 22", "SMALL = 0")
    settings = {**asdict(EvaluatorConfig(warmup_ms=100, repeats=3)), "own_code_only": False}
    with tempfile.TemporaryDirectory() as tmp:
        k = Path(tmp) / "split_debug.py"
        k.write_text(src + LOG)
        r = evaluate(k, [Shape(2, 100, 4, 4, 64, False)], device="cuda", settings=settings)
        print(r.status, r.stage)
        print(r.message[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
