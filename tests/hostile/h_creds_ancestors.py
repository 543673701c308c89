"""Hostile kernel, attack h (credentials), route: the evaluator's own processes, through /proc.

Without bubblewrap the worker has the judge's uid (root, often), and the search or CLI above the
judge holds the credentials in its environment and memory. At import the kernel walks its
ancestors up to init. Of each one of the evaluator's (the sandbox launcher, the judge, the search
or CLI: `avo.evaluate` or `sandbox.py --init` in its command line) it tries what a process of the
same uid can: read /proc/<pid>/environ, open /proc/<pid>/mem, and process_vm_readv (allowed only
to a process that may ptrace it; it asks for address 0, so it reads nothing even then). Of every
other ancestor it looks for planted values (FAKECRED) in /proc/<pid>/environ.

Verdict: `ok`, having reached nothing: the judge and the search are undumpable and the worker has
no capability, even as root. Anything reached makes it `import_error`, the message listing what
(never a value).
"""
import ctypes
import errno
import math
import os

import torch.nn.functional as F

MARKER = "FAKECRED"  # safety rail: only the test's planted values are taken, never real ones


def _parent(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _ptraceable(pid):
    libc = ctypes.CDLL(None, use_errno=True)

    class IOVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    buf = ctypes.create_string_buffer(1)
    mine, theirs = IOVec(ctypes.addressof(buf), 1), IOVec(0, 1)
    libc.process_vm_readv.restype = ctypes.c_ssize_t
    got = libc.process_vm_readv(pid, ctypes.byref(mine), 1, ctypes.byref(theirs), 1, 0)
    return got >= 0 or ctypes.get_errno() not in (errno.EPERM, errno.EACCES, errno.ESRCH)


def _reached():
    out, pid = [], _parent(os.getpid())
    while pid > 1:
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            cmdline = b""
        ours = b"avo.evaluate" in cmdline or b"sandbox.py\0--init" in cmdline
        name = next((a for a in cmdline.split(b"\0") if b"avo.evaluate" in a or b"sandbox.py" in a), b"an ancestor")
        who = f"pid {pid} ({os.path.basename(name.decode(errors='replace'))})"
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read()
            if MARKER.encode() in environ:
                out.append(f"a planted value in the environ of {who}")
            elif ours:
                out.append(f"the environ of {who}")
        except OSError:
            pass
        if ours:
            try:
                os.close(os.open(f"/proc/{pid}/mem", os.O_RDONLY))
                out.append(f"the mem of {who}")
            except OSError:
                pass
            if _ptraceable(pid):
                out.append(f"process_vm_readv into {who}")
        pid = _parent(pid)
    return out


_found = _reached()
if _found:
    raise RuntimeError("reached: " + "; ".join(_found))


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
                                       scale=scale, enable_gqa=q.shape[2] != k.shape[2]).transpose(1, 2)
    return o.contiguous() if out is None else out.copy_(o)
