"""Hostile kernel, attack r (GPU, measurement): skip the "armed" message and answer at once.

Its work is honest and queued behind the release flag, but it finds its worker's reply channel
(through gc), drops the "armed" message, makes the worker's wait for the GPU a no-op and its events
report 0.05 ms: the worker's only message is its result, sent before the judge has even written
the inputs. A judge that took the first message as the final one whenever it was not "armed"
would time a call that took no time.

Verdict: `incorrect` ("answered before its call was released").
"""
import gc

import torch
import torch.nn.functional as F

torch.cuda.synchronize = lambda *a, **k: None
torch.cuda.Event.elapsed_time = lambda self, end: 0.05


def _drop_armed():
    for obj in gc.get_objects():
        if type(obj).__name__ == "Replies" and hasattr(obj, "send") and not getattr(obj, "_patched", False):
            real = obj.send

            def send(_real=real, **msg):
                if msg.get("phase") != "armed":
                    _real(**msg)

            obj.send, obj._patched = send, True


def attention(q, k, v, causal=False, softmax_scale=None):
    _drop_armed()
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal, scale=softmax_scale,
                                          enable_gqa=k.shape[2] != q.shape[2]).transpose(1, 2)
