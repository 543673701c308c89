"""The FA3 baseline: resolved like FA4, a clear reason when its module is absent, and both return
conventions of `flash_attn_func` (out, or (out, lse)) handled. CPU only (a stand-in module)."""

import sys
import types

import torch

from avo.evaluate import baselines as bl


def test_fa3_absent_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn_interface", None)  # import raises ImportError
    b = bl.make("fa3")
    assert b.call is None and "tokenspeed-fa3" in b.reason and b.name == "fa3"


def test_fa3_call_handles_both_return_conventions(monkeypatch):
    seen = {}
    for ret_tuple in (False, True):
        def flash_attn_func(q, k, v, softmax_scale=None, causal=False, ret_tuple=ret_tuple):
            seen.update(scale=softmax_scale, causal=causal, heads=(q.shape[2], k.shape[2]))
            out = q * 2
            return (out, torch.zeros(1)) if ret_tuple else out

        monkeypatch.setitem(sys.modules, "flash_attn_interface", types.SimpleNamespace(flash_attn_func=flash_attn_func))
        b = bl.make("fa3")
        q, k = torch.ones(1, 4, 8, 16), torch.ones(1, 4, 2, 16)  # GQA passed through as is
        out = b.call(q, k, k, True, 0.25)
        assert torch.equal(out, q * 2)
        assert seen == {"scale": 0.25, "causal": True, "heads": (8, 2)}
        assert b.own_code is False


def test_every_planned_baseline_is_known():
    from avo.evaluate.plan import BASELINES

    for name in BASELINES:
        assert not bl.make(name).reason.startswith("unknown baseline"), name
