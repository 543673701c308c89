"""The own-code rule: a candidate must run its own attention kernel, not a library's.

Three looks, none of them trusting the candidate's process for what it cannot fake:
- static: the source's imports and attribute names, before anything runs (so an honest agent
  learns the rule at once, with the library named);
- the shared libraries mapped into the worker, read by the judge from /proc/PID/maps (the worker
  cannot hide a library it has loaded);
- the names of the GPU kernels a profiled call launched (reported by the worker: a tripwire for
  the plain case; a candidate that tampers with its own profiler can hide from this one alone).
A kernel that reaches a library's attention only through obfuscated names *and* one that ships no
shared library of its own (torch's built-in SDPA kernels live in libtorch) escapes the first two;
the third catches it unless it also defeats the profiler. See knowledge/evaluator.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterable, Optional

# import roots -> the library they are
_IMPORTS = {
    "flash_attn": "FlashAttention (flash_attn)", "flash_attn_interface": "FlashAttention-3",
    "flash_attn_3": "FlashAttention-3", "flash_attn_2_cuda": "FlashAttention-2", "xformers": "xformers",
    "flashinfer": "flashinfer", "cudnn": "cuDNN (cudnn frontend)", "transformer_engine": "Transformer Engine",
}
# attribute / function names that reach torch's own attention kernels (cuDNN, flash, mem-efficient)
_ATTRS = {
    "scaled_dot_product_attention": "torch SDPA (cuDNN / FlashAttention-2 / mem-efficient kernels)",
    "_scaled_dot_product_flash_attention": "torch SDPA flash kernel",
    "_scaled_dot_product_efficient_attention": "torch SDPA mem-efficient kernel",
    "_scaled_dot_product_cudnn_attention": "torch SDPA cuDNN kernel",
    "_flash_attention_forward": "torch flash kernel", "_efficient_attention_forward": "torch mem-efficient kernel",
    "_fused_sdp_choice": "torch SDPA", "flex_attention": "torch flex_attention",
}
# shared objects whose presence in the worker means the library is in use
_MAPS = [
    (re.compile(r"flash_attn_3|flash_attn_interface"), "FlashAttention-3"),
    (re.compile(r"flash_attn_2_cuda|flash_attn_cuda"), "FlashAttention-2"),
    (re.compile(r"xformers"), "xformers"), (re.compile(r"flashinfer"), "flashinfer"),
]
# ... and those that torch maps anyway but loads their engines only when used
_MAPS_NEW = [(re.compile(r"libcudnn_(engines|graph|heuristic|adv|ops|cnn)"), "cuDNN")]
_KERNELS = [
    (re.compile(r"cudnn", re.I), "cuDNN"),
    (re.compile(r"pytorch_flash|flash_fwd_kernel|flash_fwd_splitkv"), "torch's FlashAttention-2 kernel"),
    (re.compile(r"fmha_cutlass|efficient_attention|mem_eff", re.I), "torch's mem-efficient attention kernel"),
    (re.compile(r"flash::|FlashAttnFwdSm90|flash_attn"), "FlashAttention"),
    (re.compile(r"xformers|flashinfer", re.I), "xformers/flashinfer"),
]


def static_violation(source: str) -> Optional[str]:
    """The first library attention the source reaches by name, or None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None  # the import stage reports it
    for node in ast.walk(tree):
        names: Iterable[str] = ()
        if isinstance(node, ast.Import):
            names = (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = (node.module,)
        for name in names:
            root = name.split(".")[0]
            if root in _IMPORTS:
                return f"imports {name} ({_IMPORTS[root]})"
        if isinstance(node, ast.Attribute) and node.attr in _ATTRS:
            return f"calls {node.attr} ({_ATTRS[node.attr]})"
        if isinstance(node, ast.Name) and node.id in _ATTRS:
            return f"calls {node.id} ({_ATTRS[node.id]})"
    return None


def package_violation(files: dict[str, str]) -> Optional[str]:
    """static_violation over every module of a candidate (a helper's import is the kernel's),
    naming the module when the candidate has more than one file."""
    modules = sorted(p for p in files if p.endswith(".py"))
    for rel in modules:
        why = static_violation(files[rel])
        if why:
            return why if len(files) == 1 else f"{why} in {rel}"
    return None


def mapped_libraries(pid: int) -> set[str]:
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in text.splitlines() if ".so" in line and "/" in line}


def maps_violation(before: set[str], now: set[str]) -> Optional[str]:
    for pattern, lib in _MAPS:
        hit = next((p for p in now if pattern.search(p)), None)
        if hit:
            return f"loaded {Path(hit).name} ({lib})"
    for pattern, lib in _MAPS_NEW:
        hit = next((p for p in now - before if pattern.search(p)), None)
        if hit:
            return f"loaded {Path(hit).name} while running ({lib})"
    return None


def kernel_violation(names: Iterable[str]) -> Optional[str]:
    for name in names:
        for pattern, lib in _KERNELS:
            if pattern.search(name):
                return f"launched {name[:120]} ({lib})"
    return None
