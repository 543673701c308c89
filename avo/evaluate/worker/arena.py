"""The worker's view of the memory the judge shares with it: one flat byte buffer.

The judge owns the buffer (a memfd on a CPU, a cudaMalloc allocation exported by CUDA IPC on a
GPU) and says where each tensor lies in it; this side only maps it and takes views. Nothing here
can reach the judge's other memory: the judge's inputs, reference and snapshots live elsewhere.
"""

from __future__ import annotations

import ctypes
import mmap
from typing import Any

import torch

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class _CudaArray:
    def __init__(self, ptr: int, nbytes: int):
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (ptr, False),
                                         "version": 3}


def open_arena(spec: dict[str, Any]) -> torch.Tensor:
    """A uint8 tensor over the judge's buffer described by `spec` (see judge/arena.py)."""
    nbytes = int(spec["nbytes"])
    if spec["kind"] == "memfd":
        mm = mmap.mmap(int(spec["fd"]), nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        return torch.frombuffer(mm, dtype=torch.uint8, count=nbytes)
    from cuda.bindings import runtime as rt

    torch.cuda.init()
    handle = rt.cudaIpcMemHandle_t()
    raw = bytes.fromhex(spec["handle"])
    ctypes.memmove(handle.getPtr(), raw, len(raw))
    err, ptr = rt.cudaIpcOpenMemHandle(handle, rt.cudaIpcMemLazyEnablePeerAccess)
    if err != rt.cudaError_t.cudaSuccess:
        raise RuntimeError(f"cudaIpcOpenMemHandle failed: {err}")
    return torch.as_tensor(_CudaArray(int(ptr), nbytes), device="cuda")


def view(arena: torch.Tensor, t: dict[str, Any]) -> torch.Tensor:
    """The dense (batch, seqlen, heads, head_dim) tensor at byte offset t["offset"]."""
    dtype = DTYPES[t["dtype"]]
    size = 1
    for n in t["shape"]:
        size *= int(n)
    start = int(t["offset"])
    nbytes = size * torch.empty((), dtype=dtype).element_size()
    return arena[start:start + nbytes].view(dtype).view(*t["shape"])
