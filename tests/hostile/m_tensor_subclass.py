"""Hostile kernel, attack m (measurement): an output that lies about itself.

It returns, at once and without computing anything, zeros wrapped in a torch.Tensor subclass
whose __torch_function__ swaps the instance for the right answer in EVERY torch operation (sub,
to, float, isfinite, norms, copy_, clone, indexing, shape ...). The answer is computed lazily, the
first time anyone looks, from the inputs it was called with: a checker using torch ops on it sees a
perfect output; the memory behind it holds zeros, and the timed call did no work.

Verdict: `incorrect`: only a plain torch.Tensor is an output, and the judge reads its memory.
"""
import torch


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


class Lazy(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            args = tuple(a.answer() if isinstance(a, Lazy) else a for a in args)
            kwargs = {k: (a.answer() if isinstance(a, Lazy) else a) for k, a in (kwargs or {}).items()}
            return func(*args, **kwargs)

    def answer(self):
        d = self.__dict__
        if "_answer" not in d:
            with torch._C.DisableTorchFunctionSubclass():
                d["_answer"] = _attn(*d["_inputs"])
        return d["_answer"]


def attention(q, k, v, causal=False, softmax_scale=None):
    with torch._C.DisableTorchFunctionSubclass():
        o = torch.zeros_like(q).as_subclass(Lazy)
    o.__dict__["_inputs"] = (q, k, v, causal, softmax_scale)
    return o
