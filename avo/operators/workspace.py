"""The agent's scratch copy of the current version: every path a tool is given is resolved here.

A path argument must name something inside the workspace after resolution: absolute paths, `..`
hops and symlinks whose target lies outside are refused with a `SandboxError` (the tool returns
its message to the model, the loop goes on). A file is read or edited only when it is a regular
file with one name: a hard link may be a second name of a file outside (the run's secret, another
candidate's kernel), which no path check can see. Code the agent runs (its kernel, in the
evaluator) can plant such links, so the kernel file itself is read the same way.

The workspace holds the version being varied: its entry module `kernel.py` and, for a package
(avo.package), the modules it imports relatively. What is submitted is the kernel's package as it
is at submit time: `kernel.py` and every module it imports relatively, found from its imports (a
helper the kernel imports joins it; a scratch script nothing imports stays out).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from avo import package

KERNEL_FILE = "kernel.py"
# Whole-file writes are for small files; larger edits go through exact search/replace, which
# keeps a model from silently truncating a long kernel it only half remembers.
MAX_WRITE_CHARS = 64_000
MAX_READ_LINES = 800


class SandboxError(ValueError):
    """A tool argument that would reach outside the workspace, or an edit that cannot apply."""


class Workspace:
    def __init__(self, root: str | Path, kernel_file: str = KERNEL_FILE):
        self.root = Path(root).resolve()
        self.kernel_file = kernel_file

    @classmethod
    def create(cls, root: str | Path, source: str, kernel_file: str = KERNEL_FILE) -> "Workspace":
        """A workspace holding the candidate text `source` (one file, or a package's files) as its
        kernel (the directory is created if needed)."""
        Path(root).mkdir(parents=True, exist_ok=True)
        ws = cls(root, kernel_file)
        pkg = package.parse(source)
        if pkg.single:
            ws.kernel_path.unlink(missing_ok=True)  # a link left by earlier code: replaced, not written through
            ws.kernel_path.write_text(source)
        else:
            pkg.write(ws.root)  # (Package.write replaces links too)
        return ws

    @property
    def kernel_path(self) -> Path:
        return self.root / self.kernel_file

    def kernel_source(self) -> str:
        """The candidate text of the kernel as it is now: `kernel.py` alone, or the package of
        the modules it imports relatively."""
        self.file(self.kernel_file)  # the kernel itself: a regular file of the workspace's own
        try:
            return package.from_entry(self.kernel_path).text()
        except package.PackageError as exc:
            raise SandboxError(str(exc)) from None

    def resolve(self, path: str) -> Path:
        """The absolute path inside the workspace that `path` names, or SandboxError."""
        if not isinstance(path, str) or not path.strip():
            raise SandboxError("path must be a non-empty string relative to the workspace")
        if "\x00" in path:
            raise SandboxError("path contains a NUL byte")
        rel = Path(path)
        if rel.is_absolute() or path.startswith("~"):
            raise SandboxError(f"{path!r}: use a path relative to the workspace")
        if ".." in rel.parts:
            raise SandboxError(f"{path!r}: '..' is not allowed; the workspace is the whole world")
        # resolve() follows every symlink on the way, so a link pointing out is caught here too.
        target = (self.root / rel).resolve()
        if target != self.root and self.root not in target.parents:
            raise SandboxError(f"{path!r} leads outside the workspace")
        return target

    def file(self, path: str) -> Path:
        """`path` resolved, when it names a regular file of the workspace's own (see above)."""
        target = self.resolve(path)
        if Path(path) == Path(self.kernel_file) and self.kernel_path.is_symlink():
            # Even to a file inside: what is evaluated, submitted and committed is kernel.py itself,
            # and a link could be re-pointed between the test and the submit.
            raise SandboxError(f"{path!r} is a symbolic link; the kernel must be a regular file "
                               "(write it anew with write_file)")
        try:
            st = target.stat()
        except OSError:
            raise SandboxError(f"{path!r} is not a file in the workspace") from None
        if not stat.S_ISREG(st.st_mode):
            raise SandboxError(f"{path!r} is not a file in the workspace")
        if st.st_nlink > 1:
            raise SandboxError(f"{path!r} is a hard link, maybe to a file outside the workspace; "
                               "write the file anew with write_file")
        return target

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    # -- the file tools ------------------------------------------------------------------------

    def list(self) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
            for name in sorted(filenames):
                p = Path(dirpath) / name
                try:
                    self.resolve(self.rel(p))  # hide links that point out
                except SandboxError:
                    continue
                out.append(f"{self.rel(p)}  ({p.stat().st_size} bytes)")
        return out

    def read(self, path: str, start_line: int = 1, end_line: int | None = None) -> str:
        """Lines start..end (1-based, inclusive), numbered, at most MAX_READ_LINES of them."""
        lines = self.file(path).read_text(errors="replace").splitlines()
        start = max(1, int(start_line or 1))
        end = len(lines) if end_line is None else min(len(lines), int(end_line))
        end = min(end, start + MAX_READ_LINES - 1)
        body = "\n".join(f"{i:5d}  {lines[i - 1]}" for i in range(start, end + 1))
        more = f"\n[... {len(lines) - end} more lines; read from line {end + 1}]" if end < len(lines) else ""
        return f"{path} lines {start}-{end} of {len(lines)}\n{body}{more}"

    def write(self, path: str, content: str) -> str:
        if len(content) > MAX_WRITE_CHARS:
            raise SandboxError(f"write_file is for files up to {MAX_WRITE_CHARS} characters; "
                               f"edit larger files with replace_in_file")
        target = self.resolve(path)
        link = self.root / Path(path)
        if link.is_symlink():
            # The link itself is replaced by the new file; its target is left as it was.
            target = self.resolve(str(Path(path).parent)) / link.name if Path(path).parent != Path(".") \
                else self.root / link.name
            link.unlink()
        if target == self.root or target.is_dir():
            raise SandboxError(f"{path!r} is a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)  # a new file: never written into a hard link's other name
        target.write_text(content)
        return f"wrote {self.rel(target)} ({len(content.splitlines())} lines)"

    def replace(self, path: str, search: str, replace: str, replace_all: bool = False) -> str:
        """Exact search/replace. `search` must occur exactly once unless replace_all is set."""
        target = self.file(path)
        if not search:
            raise SandboxError("search text is empty")
        text = target.read_text()
        count = text.count(search)
        if count == 0:
            hint = ""
            stripped = search.strip()
            if stripped and text.count(stripped) == 1:
                hint = " (it occurs once with different surrounding whitespace; copy it exactly)"
            raise SandboxError(f"search text not found in {path}{hint}; read the file and copy the text exactly")
        if count > 1 and not replace_all:
            raise SandboxError(f"search text occurs {count} times in {path}; add context to make it "
                               "unique, or set replace_all")
        target.write_text(text.replace(search, replace) if replace_all else text.replace(search, replace, 1))
        line = text[: text.index(search)].count("\n") + 1
        return f"replaced {count if replace_all else 1} occurrence(s) in {path} (first at line {line})"
