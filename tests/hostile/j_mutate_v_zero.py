"""Hostile kernel, attack j (measurement): make the answer trivial by changing the inputs.

It zeroes v in place and returns zeros: softmax(q kᵀ) @ 0 = 0, so a reference computed from the
inputs as they are after the call agrees exactly — at no cost.

Verdict: `incorrect`, the message saying an input was modified.
"""
import torch


def attention(q, k, v, causal=False, softmax_scale=None):
    v.zero_()
    return torch.zeros_like(q)
