"""The worker's view of the memory the judge shares with it: one flat byte buffer.

The judge owns the buffer (a memfd on a CPU, a cudaMalloc allocation exported by CUDA IPC on a
GPU) and says where each tensor lies in it; this side only maps it and takes views. Nothing here
can reach the judge's other memory: the judge's inputs, reference and snapshots live elsewhere.
"""

from __future__ import annotations

import ctypes
import mmap
from typing import Any, Optional

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


class ReleaseFlag:
    """The judge's release flag (judge/arena.py), mapped into this GPU's address space: an armed
    call's stream waits on it before it starts. Through libcuda directly (the v2 stream memory
    operations, in every driver since CUDA 12), so no binding's enum names are needed."""

    _WAIT_EQ = 0x1
    _HOSTREGISTER_PORTABLE_DEVICEMAP = 0x01 | 0x02

    def __init__(self, fd: int):
        self._mm = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._cu = ctypes.CDLL("libcuda.so.1")
        host = ctypes.addressof(ctypes.c_char.from_buffer(self._mm))
        self._ok(self._cu.cuMemHostRegister_v2(ctypes.c_void_p(host), ctypes.c_size_t(mmap.PAGESIZE),
                                               ctypes.c_uint(self._HOSTREGISTER_PORTABLE_DEVICEMAP)),
                 "cuMemHostRegister")
        dptr = ctypes.c_uint64(0)
        self._ok(self._cu.cuMemHostGetDevicePointer_v2(ctypes.byref(dptr), ctypes.c_void_p(host), ctypes.c_uint(0)),
                 "cuMemHostGetDevicePointer")
        self.dptr = dptr.value

    @staticmethod
    def _ok(err: int, what: str) -> None:
        if err != 0:
            raise RuntimeError(f"{what} failed (CUresult {err})")

    def signal(self, stream_handle: int, token: int) -> None:
        """Queue on the stream: write `token` into the flag page's "done" word once everything
        queued before it has run (the judge's clock ends there)."""
        self._ok(self._cu.cuStreamWriteValue32_v2(ctypes.c_void_p(stream_handle), ctypes.c_uint64(self.dptr + 4),
                                                  ctypes.c_uint32(token & 0xFFFFFFFF), ctypes.c_uint(0)),
                 "cuStreamWriteValue32")

    def wait(self, stream_handle: int, token: int) -> None:
        """Queue on the stream: wait until the flag holds `token`."""
        self._ok(self._cu.cuStreamWaitValue32_v2(ctypes.c_void_p(stream_handle), ctypes.c_uint64(self.dptr),
                                                 ctypes.c_uint32(token & 0xFFFFFFFF), ctypes.c_uint(self._WAIT_EQ)),
                 "cuStreamWaitValue32")


def open_flag(spec: dict[str, Any]) -> tuple[Optional[ReleaseFlag], str]:
    """(the flag, "") or (None, why it cannot be used here)."""
    if spec.get("flag_fd") is None:
        return None, "no release flag offered"
    try:
        return ReleaseFlag(int(spec["flag_fd"])), ""
    except (OSError, AttributeError, RuntimeError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
