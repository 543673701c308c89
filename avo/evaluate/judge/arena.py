"""Memory the judge lends one worker: a flat byte buffer of its own, nothing else of the judge's.

On a CPU it is a memfd the worker inherits; on a GPU a cudaMalloc allocation of its own (outside
torch's caching allocator, so no tensor of the judge shares its pages) exported by CUDA IPC. Each
worker gets a separate arena: the candidate can scribble over its own inputs and outputs (the
judge notices), never over the incumbent's, a baseline's, or the judge's private copies.

On a GPU the arena also has a release flag: one page of host memory (a memfd) the worker maps
into its GPU's address space. A timed call's work waits on the GPU (cuStreamWaitValue32) until
the judge writes the call's token there, which it does only after the inputs are in place: the
judge's clock then starts at the release, and no host-side launch time is in it for anybody.
Writing the token early (the page is the worker's to scribble on too) only runs the kernel on the
previous call's inputs, which the check of every timed output catches.

The page's second word is the worker's "done": its stream writes the call's token there after the
call's last output is delivered (cuStreamWriteValue32), and the judge, spinning on it, ends its
clock within microseconds of the GPU getting there, instead of at a reply whose path through
the host jitters by ~0.1 ms. A worker can write it early too; what its GPU still has to do is then
waited for by the judge inside the clock (judge.py, `settle`).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from typing import Any, Optional

import torch

_ALIGN = 256


class _CudaArray:
    def __init__(self, ptr: int, nbytes: int):
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (ptr, False),
                                         "version": 3}


def _check(err, what: str) -> None:
    from cuda.bindings import runtime as rt

    if err != rt.cudaError_t.cudaSuccess:
        raise RuntimeError(f"{what} failed: {err}")


class Arena:
    """`nbytes` of shared memory; `place(shape)` hands out aligned, dense tensor slots."""

    def __init__(self, device: str, nbytes: int):
        self.device = device
        self.nbytes = max(_ALIGN, (nbytes + _ALIGN - 1) // _ALIGN * _ALIGN)
        self._used = 0
        self.fd: Optional[int] = None
        self.flag_fd: Optional[int] = None
        self.token = 0  # what the release flag holds now
        self._ptr: Optional[int] = None
        if device == "cpu":
            self.fd = os.memfd_create("avo-arena", 0)
            os.ftruncate(self.fd, self.nbytes)
            self._mm = mmap.mmap(self.fd, self.nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self.bytes = torch.frombuffer(self._mm, dtype=torch.uint8, count=self.nbytes)
        else:
            from cuda.bindings import runtime as rt

            err, ptr = rt.cudaMalloc(self.nbytes)
            _check(err, f"cudaMalloc({self.nbytes})")
            self._ptr = int(ptr)
            self.bytes = torch.as_tensor(_CudaArray(self._ptr, self.nbytes), device="cuda")
            err, handle = rt.cudaIpcGetMemHandle(self._ptr)
            _check(err, "cudaIpcGetMemHandle")
            self._handle = ctypes.string_at(handle.getPtr(), 64).hex()
            self.flag_fd = os.memfd_create("avo-flag", 0)
            os.ftruncate(self.flag_fd, mmap.PAGESIZE)
            self._flag = mmap.mmap(self.flag_fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def fds(self) -> list[int]:
        return [fd for fd in (self.fd, self.flag_fd) if fd is not None]

    def spec(self) -> dict[str, Any]:
        if self.device == "cpu":
            return {"kind": "memfd", "fd": self.fd, "nbytes": self.nbytes}
        return {"kind": "cuda_ipc", "handle": self._handle, "nbytes": self.nbytes, "flag_fd": self.flag_fd}

    def release(self, token: int) -> None:
        """Let the worker's armed call run (see the module docstring)."""
        self.token = token & 0xFFFFFFFF
        struct.pack_into("<I", self._flag, 0, self.token)

    def done(self) -> int:
        """What the worker's "done" word holds (the token of the call it says it finished)."""
        return struct.unpack_from("<I", self._flag, 4)[0]

    def place(self, shape, dtype: torch.dtype) -> tuple[torch.Tensor, dict[str, Any]]:
        """A fresh slot: (the judge's view of it, its description for the worker)."""
        n = 1
        for x in shape:
            n *= int(x)
        size = n * torch.empty((), dtype=dtype).element_size()
        start = self._used
        if start + size > self.nbytes:
            raise MemoryError(f"arena of {self.nbytes} bytes is full")
        self._used = (start + size + _ALIGN - 1) // _ALIGN * _ALIGN
        t = self.bytes[start:start + size].view(dtype).view(*shape)
        return t, {"offset": start, "shape": [int(x) for x in shape], "dtype": str(dtype).replace("torch.", "")}

    def reset(self) -> None:
        self._used = 0

    def close(self) -> None:
        self.bytes = None
        if self.device == "cpu":
            try:
                self._mm.close()
            except (BufferError, ValueError):
                pass  # a view is still alive; the mapping goes with the process
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
        elif self._ptr is not None:
            from cuda.bindings import runtime as rt

            try:
                self._flag.close()
            except (BufferError, ValueError):
                pass
            if self.flag_fd is not None:
                os.close(self.flag_fd)
                self.flag_fd = None
            torch.cuda.synchronize()
            rt.cudaFree(self._ptr)
            self._ptr = None


def slot_bytes(shapes: list[tuple], dtype: torch.dtype) -> int:
    """Bytes an arena needs for these tensors, alignment included."""
    el = torch.empty((), dtype=dtype).element_size()
    total = 0
    for shape in shapes:
        n = el
        for x in shape:
            n *= int(x)
        total += (n + _ALIGN - 1) // _ALIGN * _ALIGN
    return total
