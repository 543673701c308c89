"""Cutting files into retrievable chunks that follow their structure.

Python: one chunk per top-level function, per class (per method, for large classes), and per run
of module-level code (the module docstring, constants, `__all__`), each spanning exact source lines
(decorators and docstrings included). Markdown: one chunk per section (#, ##, ###), titled by its
heading path. Anything else: overlapping line windows. Over-long chunks are windowed too, so a
1000-line kernel method still yields spans an agent can read in one go.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

MAX_CHUNK_LINES = 160  # longer spans are cut into windows
WINDOW_LINES = 80
WINDOW_OVERLAP = 16
CLASS_SPLIT_LINES = 120  # classes longer than this get one chunk per method


@dataclass
class Chunk:
    path: str  # relative to the source root, POSIX separators
    start_line: int  # 1-based, inclusive
    end_line: int  # inclusive
    title: str  # shown to the reader: "class PipelineTmaAsync", "Hopper > WGMMA"
    name: str  # boosted in ranking: the qualified name or the heading
    text: str

    def to_row(self) -> list:
        return [self.path, self.start_line, self.end_line, self.title, self.name, self.text]

    @classmethod
    def from_row(cls, row: list) -> "Chunk":
        return cls(*row)


def _span(lines: list[str], start: int, end: int) -> str:
    return "\n".join(lines[start - 1 : end])


def _windows(path: str, lines: list[str], start: int, end: int, title: str, name: str) -> list[Chunk]:
    """The span [start, end] as one chunk, or as overlapping windows when it is too long."""
    if end - start + 1 <= MAX_CHUNK_LINES:
        return [Chunk(path, start, end, title, name, _span(lines, start, end))]
    out = []
    step = WINDOW_LINES - WINDOW_OVERLAP
    lo = start
    while True:
        hi = min(lo + WINDOW_LINES - 1, end)
        out.append(Chunk(path, lo, hi, f"{title} (lines {lo}-{hi})", name, _span(lines, lo, hi)))
        if hi >= end:
            return out
        lo += step


# --- Python -------------------------------------------------------------------------------

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno] + [d.lineno for d in decorators])


def _runs(body: list[ast.stmt], skip_imports: bool) -> list[tuple[int, int]]:
    """Line spans of consecutive statements that are not definitions; with skip_imports, imports
    are left out of the spans' ends (a module's import block alone is not knowledge)."""
    runs: list[tuple[int, int]] = []
    current: list[int] | None = None
    for node in body:
        if skip_imports and isinstance(node, (ast.Import, ast.ImportFrom)):
            continue  # neither starts nor ends a run: a docstring and the constants after the imports stay one chunk
        if isinstance(node, _DEFS):
            if current:
                runs.append((current[0], current[1]))
            current = None
            continue
        lo, hi = _first_line(node), node.end_lineno or node.lineno
        if current is None:
            current = [lo, hi]
        else:
            current[1] = hi
    if current:
        runs.append((current[0], current[1]))
    return runs


def _is_overload_stub(node: ast.stmt) -> bool:
    """`@overload` signatures: the implementation that follows says everything they say."""
    for d in getattr(node, "decorator_list", []):
        target = d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", None)
        if target == "overload":
            return True
    return False


def _def_chunks(node: ast.stmt, path: str, lines: list[str], prefix: str) -> list[Chunk]:
    if _is_overload_stub(node):
        return []
    qual = prefix + node.name
    start, end = _first_line(node), node.end_lineno or node.lineno
    is_class = isinstance(node, ast.ClassDef)
    label = f"class {qual}" if is_class else f"def {qual}"
    if not is_class or end - start + 1 <= CLASS_SPLIT_LINES:
        return _windows(path, lines, start, end, label, qual)
    # A large class: its header (signature, docstring, class attributes up to the first method),
    # then each member on its own; later attribute blocks become small chunks of their own.
    out: list[Chunk] = []
    members = [n for n in node.body if isinstance(n, _DEFS)]
    header_end = (_first_line(members[0]) - 1) if members else end
    out += _windows(path, lines, start, max(start, header_end), label, qual)
    for lo, hi in _runs(node.body, skip_imports=False):
        if lo > header_end:
            out += _windows(path, lines, lo, hi, f"{label} (attributes)", qual)
    for member in members:
        out += _def_chunks(member, path, lines, qual + ".")
    return out


def chunk_python(path: str, text: str) -> list[Chunk]:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return chunk_lines(path, text)
    lines = text.splitlines()
    module = PurePosixPath(path).with_suffix("").as_posix().replace("/", ".")
    out: list[Chunk] = []
    for lo, hi in _runs(tree.body, skip_imports=True):
        out += _windows(path, lines, lo, hi, f"module {module}", module.rsplit(".", 1)[-1])
    for node in tree.body:
        if isinstance(node, _DEFS):
            out += _def_chunks(node, path, lines, "")
    out.sort(key=lambda c: (c.start_line, c.end_line))
    return out


# --- Markdown -----------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,3})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def chunk_markdown(path: str, text: str) -> list[Chunk]:
    lines = text.splitlines()
    heads: list[tuple[int, int, str]] = []  # (line, level, text)
    fenced = False
    for i, line in enumerate(lines, 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else _HEADING.match(line)
        if m:
            heads.append((i, len(m.group(1)), m.group(2).strip()))
    stem = PurePosixPath(path).stem
    out: list[Chunk] = []
    bounds = [(1, 0, stem)] + heads if not heads or heads[0][0] > 1 else heads
    stack: list[tuple[int, str]] = []
    for j, (line, level, head) in enumerate(bounds):
        end = (bounds[j + 1][0] - 1) if j + 1 < len(bounds) else len(lines)
        if level:
            stack = [(lv, h) for lv, h in stack if lv < level] + [(level, head)]
        body = [ln for ln in lines[line:end] if ln.strip()] if level else lines[line - 1 : end]
        if not any(ln.strip() for ln in body):
            continue  # a heading immediately followed by a sub-heading
        # The file's own H1 is implied by its path once there are deeper headings.
        shown = stack[1:] if len(stack) > 1 and stack[0][0] == 1 else stack
        title = " > ".join(h for _, h in shown) if level else stem
        out += _windows(path, lines, line, end, title, head if level else stem)
    return out


# --- Anything else ------------------------------------------------------------------------


def chunk_lines(path: str, text: str) -> list[Chunk]:
    lines = text.splitlines()
    if not lines:
        return []
    name = PurePosixPath(path).name
    return _windows(path, lines, 1, len(lines), name, PurePosixPath(path).stem)


def chunk_file(path: str, text: str) -> list[Chunk]:
    suffix = PurePosixPath(path).suffix.lower()
    if suffix == ".py":
        return chunk_python(path, text)
    if suffix in (".md", ".markdown"):
        return chunk_markdown(path, text)
    return chunk_lines(path, text)
