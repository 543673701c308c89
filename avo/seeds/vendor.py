"""Copy an installed package's modules into a seed package, imports made relative.

`vendor("flash_attn.cute", ["flash_fwd_sm90"], dest)` copies `flash_fwd_sm90.py` and every module
of `flash_attn.cute` it imports (transitively, imports inside functions included) into `dest`,
rewrites the imports that name the package (`from flash_attn.cute.X import Y`, `from
flash_attn.cute import X`, `import flash_attn.cute.X as Y`) into relative ones, copies the
distribution's license files beside them, and returns the origin to record: distribution,
version, license, and the sha256 of every file as installed. Imports of other packages (quack,
cutlass) stay as they are: those stay installed dependencies.

The copy happens from the user's own install at run start (`hardware.seed_source`, assembled by
avo/search/seed.py); nothing of another project is in this repository (P2-h). An `ORIGIN` file
(JSON: the origin above) is written beside the copies, so the lineage's first commit carries it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import importlib.metadata
import importlib.util
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence


class VendorError(Exception):
    """One line: what cannot be vendored and why."""


@dataclass
class Origin:
    package: str  # the dotted package the modules came from, e.g. flash_attn.cute
    distribution: Optional[str]  # e.g. flash-attn-4
    version: Optional[str]
    license: Optional[str]
    modules: list[str] = field(default_factory=list)  # files copied, relative to dest
    sha256: dict[str, str] = field(default_factory=dict)  # of each file as installed
    license_files: list[str] = field(default_factory=list)


def package_dir(package: str) -> Path:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as exc:
        raise VendorError(f"{package} is not importable here: {exc}") from None
    if spec is None or not spec.submodule_search_locations:
        raise VendorError(f"{package} is not an installed package (pip install the distribution that has it)")
    return Path(list(spec.submodule_search_locations)[0])


def _inside(package: str, name: str) -> Optional[str]:
    """The module path inside `package` that the dotted `name` names, or None."""
    if name == package:
        return ""
    if name.startswith(package + "."):
        return name[len(package) + 1:]
    return None


def _imports(tree: ast.AST, package: str) -> set[str]:
    """Modules of `package` a module imports, as dotted paths inside it."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            sub = _inside(package, node.module)
            if sub == "":
                found.update(a.name for a in node.names)  # from pkg import X: X may be a module
            elif sub is not None:
                found.add(sub)
        elif isinstance(node, ast.Import):
            for a in node.names:
                sub = _inside(package, a.name)
                if sub:
                    found.add(sub)
    return found


def _file(root: Path, module: str) -> Optional[Path]:
    p = root.joinpath(*module.split("."))
    if p.with_suffix(".py").is_file():
        return p.with_suffix(".py")
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return None


def closure(package: str, entries: Sequence[str], root: Optional[Path] = None) -> list[str]:
    """Every module of `package` reachable from `entries` by imports, sorted (dotted, inside it)."""
    root = root or package_dir(package)
    todo, seen = list(entries), set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        path = _file(root, mod)
        if path is None:
            if mod in entries:
                raise VendorError(f"{package}.{mod} not found in {root}")
            continue  # `from pkg import name` of a name that is not a module
        seen.add(mod)
        try:
            tree = ast.parse(path.read_text(), str(path))
        except SyntaxError as exc:
            raise VendorError(f"{path} does not parse: {exc}") from None
        todo.extend(_imports(tree, package) - seen)
    return sorted(seen)


def rewrite_imports(source: str, package: str, module: str) -> str:
    """`source` of `package.module` with its imports of `package` made relative (text outside the
    import statements untouched)."""
    tree = ast.parse(source)
    depth = module.count(".")  # a module in a subpackage climbs that many levels more
    dots = "." * (depth + 1)
    edits: list[tuple[int, int, int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            sub = _inside(package, node.module)
            if sub is None:
                continue
            names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
            edits.append((node.lineno, node.col_offset, node.end_lineno, node.end_col_offset,
                          f"from {dots}{sub} import {names}"))
        elif isinstance(node, ast.Import):
            mine = [a for a in node.names if _inside(package, a.name)]
            if not mine:
                continue
            if len(mine) != len(node.names) or any(a.asname is None for a in mine):
                raise VendorError(f"{package}.{module} line {node.lineno}: `import {package}.X` without `as` "
                                  f"(or mixed with other packages) cannot be made relative")
            parts = []
            for a in mine:
                head, _, last = _inside(package, a.name).rpartition(".")
                parts.append(f"from {dots}{head} import {last} as {a.asname}")
            edits.append((node.lineno, node.col_offset, node.end_lineno, node.end_col_offset, "; ".join(parts)))
    raw = source.encode()  # ast's column offsets count UTF-8 bytes
    offsets = [0]
    for ln in raw.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(ln))
    for l0, c0, l1, c1, new in sorted(edits, reverse=True):  # from the end: offsets stay valid
        a, b = offsets[l0 - 1] + c0, offsets[l1 - 1] + c1
        raw = raw[:a] + new.encode() + raw[b:]
    return raw.decode()


def _distribution(package: str) -> Optional[importlib.metadata.Distribution]:
    top = package.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top) or []
    for name in names:
        try:
            return importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def vendor(package: str, entries: Sequence[str], dest: str | Path) -> Origin:
    """Copy `entries` of the installed `package` and what they import of it into `dest` (made a
    package: an `__init__.py` is added where missing); see the module docstring."""
    root = package_dir(package)
    dest = Path(dest)
    mods = closure(package, entries, root)
    dist = _distribution(package)
    meta = dist.metadata if dist is not None else None
    origin = Origin(package=package, distribution=meta["Name"] if meta else None,
                    version=dist.version if dist is not None else None,
                    license=(meta.get("License-Expression") or meta.get("License")) if meta else None)
    licenses = [Path(dist.locate_file(f)) for f in (dist.files or []) if ".dist-info" in str(f) and (
        "licenses" in f.parts or f.name.upper().startswith(("LICENSE", "AUTHORS", "COPYING", "NOTICE")))] if dist else []
    licenses = [p for p in licenses if p.is_file()]
    if not licenses:  # checked before anything is written: no copy without its license
        raise VendorError(f"no license file found for {package} ({origin.distribution or 'no distribution'}): "
                          f"not copied without one")
    dest.mkdir(parents=True, exist_ok=True)
    for mod in mods:
        src = _file(root, mod)
        raw = src.read_bytes()
        rel = src.relative_to(root)
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        module = mod if src.name != "__init__.py" else mod + "._"  # a package's __init__ sits one level in
        out.write_text(rewrite_imports(raw.decode(), package, module))
        origin.modules.append(str(rel))
        origin.sha256[str(rel)] = hashlib.sha256(raw).hexdigest()
    for pkg_dir in {dest, *(dest / Path(m).parent for m in origin.modules)}:
        init = pkg_dir / "__init__.py"
        if not init.exists():
            init.write_text(f'"""Vendored from {package} {origin.version or ""} (see ORIGIN)."""\n')
    for path in licenses:
        shutil.copyfile(path, dest / path.name)
        origin.license_files.append(path.name)
    (dest / "ORIGIN").write_text(json.dumps(asdict(origin), indent=1, sort_keys=True) + "\n")
    return origin


def installed(package: str) -> tuple[Optional[str], Optional[str]]:
    """(distribution, version) of the installed `package`, or (None, None) when it is not there."""
    try:
        package_dir(package)
    except VendorError:
        return None, None
    dist = _distribution(package)
    return (dist.metadata["Name"], dist.version) if dist is not None else (None, None)
