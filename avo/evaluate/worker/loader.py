"""Import a kernel file by path, and turn exceptions into short messages an LLM can act on."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Callable

MAX_MESSAGE = 2000
_FRAMES = 4


class ContractError(Exception):
    """The module imported but does not expose the kernel contract."""


def load_kernel(path: str | Path, tag: str = "kernel", package: bool = False) -> ModuleType:
    """Import `path` under a unique module name (two versions of a kernel can live in one process).
    `package`: the file is the entry module of a package (its directory), imported as a submodule
    of it so that its relative imports resolve there."""
    path = Path(path).resolve()
    if package:
        module = _import_entry(path, tag)
    else:
        digest = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
        stem = re.sub(r"\W", "_", path.stem)
        module = _exec(f"avo_{tag}_{stem}_{digest}", path)
    fn = getattr(module, "attention", None)
    if not callable(fn):
        raise ContractError(
            f"{path.name} defines no attention(q, k, v, causal=False, softmax_scale=None) function")
    return module


def _exec(name: str, path: Path, search: list[str] | None = None) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=search)
    if spec is None or spec.loader is None:
        raise ContractError(f"{path} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import_entry(entry: Path, tag: str) -> ModuleType:
    root = entry.parent
    h = hashlib.sha1()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    name = f"avo_{tag}_pkg_{h.hexdigest()[:12]}"
    if (root / "__init__.py").is_file():
        _exec(name, root / "__init__.py", [str(root)])
    else:  # a namespace for the package's modules: nothing runs before the entry
        pkg = ModuleType(name)
        pkg.__path__ = [str(root)]
        pkg.__package__ = name
        sys.modules[name] = pkg
    return importlib.import_module(f"{name}.{entry.stem}")


def accepts_out(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "out" in params


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """Keep the head (what failed) and the tail (where) of a long message."""
    text = text.strip()
    if len(text) <= limit:
        return text
    half = (limit - 40) // 2  # room for the marker line
    return f"{text[:half]}\n... [{len(text) - 2 * half} chars cut] ...\n{text[-half:]}"


def format_exception(exc: BaseException, kernel_path: str | Path | None = None, package: bool = False) -> str:
    """The last few frames (frames in the kernel's files always kept) and the exception's own
    text. `package`: every file under the kernel's directory is the kernel's, named relative to it."""
    tb = traceback.extract_tb(exc.__traceback__)
    kernel_file = str(Path(kernel_path).resolve()) if kernel_path else None
    root = str(Path(kernel_path).resolve().parent) + "/" if kernel_path and package else None

    def mine(filename: str) -> bool:
        return filename == kernel_file or (root is not None and filename.startswith(root))

    # Drop our own frames: the agent can act only on its kernel and the libraries it calls.
    ours = str(Path(__file__).resolve().parent)
    frames = [f for f in tb if not f.filename.startswith((ours, "<frozen"))]
    keep = [f for f in frames if mine(f.filename)][-_FRAMES:]
    tail = frames[-_FRAMES:]
    chosen = [f for f in frames if f in keep or f in tail]
    lines = []
    for f in chosen:
        where = (f.filename[len(root):] if root and f.filename.startswith(root) else Path(f.filename).name) \
            if mine(f.filename) else f.filename
        lines.append(f'  File "{where}", line {f.lineno}, in {f.name}')
        if f.line:
            lines.append(f"    {f.line.strip()}")
    head = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    body = ("Traceback (last frames):\n" + "\n".join(lines) + "\n") if lines else ""
    return shorten(body + head)
