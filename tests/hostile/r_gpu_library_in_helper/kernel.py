"""Hostile (own code, packages): the entry is clean; the library call hides in a helper module that
it imports relatively. The judge's static look covers every module of the package, and names it."""

from .helper import fast_path


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    res = fast_path(q, k, v, causal, softmax_scale)
    if out is not None:
        out.copy_(res)
        return out
    return res
