"""Hostile kernel, attack r (GPU, own-code rule): call a library attention, hidden from a reader.

No import or name of an attention library appears in the source as written: the module and
function names are assembled at run time, tried in order — FlashAttention-3's
`flash_attn` + `_interface`, FlashAttention-2's `flash_attn`, then torch's own
scaled_dot_product_attention (flash / cuDNN / efficient backends), reached by getattr on
importlib.import_module("torch.nn." + "functional").

Verdict: `incorrect` with the library named (flash / cudnn / SDPA) when own_code_only is on (the
default): the rule is enforced on what runs, not on what the file says.
"""
import importlib
import math

_J = "".join


def _library():
    for mod, fn in ((_J(["flash", "_attn", "_interface"]), _J(["flash", "_attn", "_func"])),
                    (_J(["flash", "_attn"]), _J(["flash", "_attn", "_func"]))):
        try:
            return "fa", getattr(importlib.import_module(mod), fn)
        except Exception:
            pass
    functional = importlib.import_module(_J(["torch", ".nn", ".functional"]))
    return "sdpa", getattr(functional, _J(["scaled", "_dot", "_product", "_attention"]))


_KIND, _FN = _library()


def attention(q, k, v, causal=False, softmax_scale=None):
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if _KIND == "fa":
        try:
            o = _FN(q, k, v, softmax_scale=scale, causal=causal)
            return (o[0] if isinstance(o, tuple) else o).contiguous()
        except Exception:
            pass
        fallback = getattr(importlib.import_module(_J(["torch", ".nn", ".functional"])),
                           _J(["scaled", "_dot", "_product", "_attention"]))
    else:
        fallback = _FN
    o = fallback(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=scale,
                 enable_gqa=q.shape[2] != k.shape[2])
    return o.transpose(1, 2).contiguous()
