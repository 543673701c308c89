"""A candidate kernel: one file, or a package of files, and the one canonical text that stands for it.

A candidate is a directory: an entry module (`kernel.py`) exposing the kernel contract, plus the
modules it imports relatively (`from .softmax import ...`, found statically, imports inside
functions included) and the license/notice files beside them (a vendored seed carries its
project's license with it). Everything downstream of the operator hashes, stores, diffs and
evaluates one text per candidate:

- a single-file candidate's text is the file itself, byte for byte (so hashes, archives and
  lineages of single-file runs are what they always were);
- a package's text is canonical JSON, `{"avo_package": 1, "files": {path: text}}` with sorted
  keys, so the same files always give the same hash. Its entry is always `kernel.py`.

`parse` is run by the judge on text a candidate wrote: it refuses anything that could escape the
directory the files are written into (absolute paths, `..`, dot files, links are never written)
and anything too large. A module loaded only dynamically (importlib with a computed name) is not
part of the package, so it fails at import in the evaluator rather than running unrecorded.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping, Optional

ENTRY = "kernel.py"
PACK_FILE = "kernel.avopkg"  # a package's canonical text on disk (the run dir's own copy of it)
MAGIC = "avo_package"
FORMAT = 1
MAX_FILES = 400
MAX_BYTES = 8 << 20  # FA4's whole cute/ tree is ~1.5 MB
# Files that travel with the modules although nothing imports them: a copy's license and origin.
_NOTICE = re.compile(r"^(LICENSE|LICENCE|AUTHORS|COPYING|NOTICE|ORIGIN)([._-].*)?$", re.I)
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class PackageError(ValueError):
    """One line: why these files are not a candidate."""


@dataclass(frozen=True)
class Package:
    files: Mapping[str, str]  # posix path relative to the package root -> text; ENTRY among them

    entry = ENTRY  # one name for every candidate: the lineage, the workspace and the tools rely on it

    def __post_init__(self):
        if ENTRY not in self.files:
            raise PackageError(f"the package has no entry module {ENTRY}")
        for path in self.files:
            check_path(path)
        dirs = {str(parent) for path in self.files for parent in PurePosixPath(path).parents if str(parent) != "."}
        clash = sorted(dirs & set(self.files))
        if clash:  # "a.py" and "a.py/b.py": one of them could not be written
            raise PackageError(f"{clash[0]} is both a file and a directory of the package")
        if len(self.files) > MAX_FILES:
            raise PackageError(f"the package has {len(self.files)} files; at most {MAX_FILES}")
        size = sum(len(t.encode()) for t in self.files.values())
        if size > MAX_BYTES:
            raise PackageError(f"the package holds {size} bytes; at most {MAX_BYTES}")

    @property
    def single(self) -> bool:
        return len(self.files) == 1

    @property
    def entry_source(self) -> str:
        return self.files[self.entry]

    def text(self) -> str:
        """The canonical text: the entry itself for a single file, else sorted JSON."""
        if self.single:
            return self.entry_source
        return json.dumps({MAGIC: FORMAT, "files": dict(sorted(self.files.items()))},
                          sort_keys=True, ensure_ascii=False, indent=1) + "\n"

    def with_entry(self, source: str) -> "Package":
        return Package({**self.files, ENTRY: source})

    def modules(self) -> list[str]:
        return sorted(p for p in self.files if p.endswith(".py"))

    def write(self, dest: str | Path) -> Path:
        """Write the files under `dest` (created; nothing outside it is touched, no file written
        through a link) and return the entry's path."""
        root = Path(dest)
        root.mkdir(parents=True, exist_ok=True)
        for rel, text in self.files.items():
            out = root.joinpath(*PurePosixPath(rel).parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.is_symlink() or out.exists():
                out.unlink()
            out.write_bytes(text.encode())
        return root.joinpath(*PurePosixPath(self.entry).parts)


def check_path(path: str) -> None:
    """A path a package may hold: relative, inside, no dot files, names of plain characters."""
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path:
        raise PackageError(f"bad file name in package: {path!r}")
    p = PurePosixPath(path)
    if p.is_absolute() or any(part in ("", ".", "..", "__pycache__") or part.startswith(".")
                              or not _PART.match(part) for part in p.parts) or str(p) != path:
        raise PackageError(f"bad file name in package: {path!r} (relative paths of plain names only)")


def is_package_text(text: str) -> bool:
    return text.lstrip().startswith("{") and f'"{MAGIC}"' in text[:200]


def parse(text: str) -> Package:
    """The package a canonical text stands for (a plain source is a single-file package)."""
    if not is_package_text(text):
        return Package({ENTRY: text})
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise PackageError(f"the package text is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get(MAGIC) != FORMAT:
        raise PackageError(f"not an avo package of format {FORMAT}")
    files = doc.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise PackageError("the package's files must map names to texts")
    if set(doc) != {MAGIC, "files"}:
        raise PackageError(f"unknown fields in the package: {sorted(set(doc) - {MAGIC, 'files'})}")
    pkg = Package(files)
    if pkg.text() != text:  # one package, one text: what is hashed is what is evaluated
        raise PackageError("the package text is not in canonical form (avo.package.Package.text())")
    return pkg


def file_name(text: str) -> str:
    """The name a candidate text is stored under: `kernel.py`, or `kernel.avopkg` for a package."""
    return PACK_FILE if is_package_text(text) else ENTRY


def entry_source(text: str) -> str:
    """The entry module's source of a candidate text (the text itself for a single file)."""
    return parse(text).entry_source


def with_entry(text: str, source: str) -> str:
    """`text` with its entry module replaced by `source`."""
    return parse(text).with_entry(source).text()


# -- reading a package from a directory ----------------------------------------------------------

def relative_imports(source: str, module: str, filename: str = "<module>") -> set[str]:
    """Modules (dotted, relative to the package root) that `module` (dotted, e.g. `kernel` or
    `sub.helper`; `sub` for `sub/__init__.py` is `sub.__init__`) imports relatively. Raises
    PackageError for an import that climbs above the root."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError:
        return set()  # its imports are unknown; importing it in the evaluator reports the error
    here = module.split(".")[:-1]  # the package the module is in
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        if node.level - 1 > len(here):
            raise PackageError(f"{filename} line {node.lineno}: a relative import climbs above the package")
        base = here[:len(here) - (node.level - 1)]
        target = base + (node.module.split(".") if node.module else [])
        if node.module:
            found.add(".".join(target))
        elif not target:
            pass  # `from . import x` at the root: x is a module or a name of __init__
        for alias in node.names:  # `from .pkg import name`: name may be a submodule
            found.add(".".join(target + [alias.name]))
        # every package on the way has its __init__ run
        for i in range(1, len(target) + 1):
            found.add(".".join(target[:i] + ["__init__"]))
    if here:
        found.add(".".join(here + ["__init__"]))
    return found


def _module_file(root: Path, module: str) -> Optional[str]:
    parts = module.split(".")
    if parts[-1] == "__init__":
        options = [PurePosixPath(*parts).with_name("__init__.py")]
    else:
        options = [PurePosixPath(*parts).with_suffix(".py"), PurePosixPath(*parts, "__init__.py")]
    for rel in options:
        p = root / rel
        if p.is_file() or p.is_symlink():  # a link (even a dangling one) is refused by the reader, not skipped
            return str(rel)
    return None


def read_regular(path: Path, strict: bool = True) -> str:
    """A file's text. `strict` (files a candidate's code could have written): only a regular
    file with one name (a hard link may be a second name of a file outside the package; no path
    check can see that). Not strict: the user's own files, where links are the user's choice."""
    try:
        st = os.lstat(path) if strict else os.stat(path)
    except OSError:
        raise PackageError(f"{path.name}: not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise PackageError(f"{path.name} is not a regular file (links are not part of a package)")
    if strict and st.st_nlink > 1:
        raise PackageError(f"{path.name} is a hard link; write the file anew")
    if st.st_size > MAX_BYTES:
        raise PackageError(f"{path.name} is larger than {MAX_BYTES} bytes")
    try:
        return path.read_bytes().decode()
    except UnicodeDecodeError:
        raise PackageError(f"{path.name} is not UTF-8 text") from None


def from_entry(entry: str | Path, strict: bool = True) -> Package:
    """The package of the entry file `entry`: it and the modules of its directory it imports
    relatively (transitively). When that is more than the entry alone, the root's `__init__.py`
    (which runs before the entry once it is imported as part of a package) and the notice files
    of the directory tree come too. `strict`: see read_regular."""
    entry = Path(entry)
    root = entry.parent.resolve()
    name = entry.name
    if not name.endswith(".py"):
        raise PackageError(f"{name}: the entry must be a .py file")
    files: dict[str, str] = {}
    _closure(root, [name[:-3]], files, strict)
    if name not in files:
        raise PackageError(f"{entry}: not found")
    if len(files) == 1:
        return Package({ENTRY: files[name]})  # a single file: its name does not matter
    if name != ENTRY:
        raise PackageError(f"{entry}: the entry module of a package (a kernel that imports its own modules "
                           f"relatively) must be named {ENTRY}")
    if (root / "__init__.py").is_file():
        _closure(root, ["__init__"], files, strict)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        for fn in sorted(filenames):
            if _NOTICE.match(fn):
                rel = str(PurePosixPath(Path(dirpath, fn).relative_to(root)))
                try:
                    check_path(rel)
                    files[rel] = read_regular(Path(dirpath, fn), strict)
                except PackageError:
                    continue  # a notice file that cannot travel is left behind, not an error
    return Package(files)


def _closure(root: Path, starts: list[str], files: dict[str, str], strict: bool) -> None:
    todo, seen = list(starts), {r[:-3].replace("/", ".") for r in files}
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        rel = _module_file(root, mod)
        if rel is None:
            continue  # a name imported from a package, not a module; the import stage judges it
        if strict:
            _inside(root, rel)
        text = read_regular(root / rel, strict)
        files[rel] = text
        todo.extend(relative_imports(text, rel[:-3].replace("/", "."), rel) - seen)
        if len(files) > MAX_FILES:
            raise PackageError(f"the kernel imports more than {MAX_FILES} modules")


def _inside(root: Path, rel: str) -> None:
    target = (root / rel).resolve()
    if root not in target.parents:
        raise PackageError(f"{rel} leads outside the package directory")


def load(path: str | Path, strict: bool = True) -> Package:
    """A candidate given by path: a package's canonical text file, a directory (its `kernel.py`),
    or an entry file (a single file when it imports nothing relatively)."""
    p = Path(path)
    if p.is_dir():
        if not (p / ENTRY).is_file():
            raise PackageError(f"{path}: a package directory needs an entry module {ENTRY}")
        return from_entry(p / ENTRY, strict)
    text = read_regular(p, strict)
    return parse(text) if is_package_text(text) else from_entry(p, strict)


# -- showing ------------------------------------------------------------------------------------

def render(text: str) -> str:
    """A candidate's files for a reader: the source itself for a single file, else each file
    under a header line."""
    pkg = parse(text)
    if pkg.single:
        return pkg.entry_source
    return "\n".join(f"==> {rel} <==\n{body}" for rel, body in sorted(pkg.files.items(),
                                                                     key=lambda kv: (kv[0] != ENTRY, kv[0])))


def diff(a: str, b: str, a_label: str = "a", b_label: str = "b") -> str:
    """A unified diff of every file that differs between two candidate texts (a single file is
    named by its entry's name under the labels, as `a/kernel.py`)."""
    pa, pb = parse(a), parse(b)
    out = []
    for rel in sorted(set(pa.files) | set(pb.files)):
        old, new = pa.files.get(rel), pb.files.get(rel)
        if old == new:
            continue
        out.extend(difflib.unified_diff((old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True),
                                        f"{a_label}/{rel}" if old is not None else "/dev/null",
                                        f"{b_label}/{rel}" if new is not None else "/dev/null"))
    return "".join(out)
