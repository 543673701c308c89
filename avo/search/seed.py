"""Where the first version of the lineage comes from.

`hardware.seed_kernel` is a file ("kernels/....py", relative to the cwd or the repo root), a
package directory (its `kernel.py` and the modules it imports relatively: avo.package), or an
installed module ("module:pkg.mod", whose source file is copied). `hardware.seed_source` adds
modules of an installed package copied beside it at run start (from_sources). `search.transfer_from`
(a run dir) overrides all of them with that run's best version, recorded in the lineage's first commit.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from avo import package
from avo.archive import open_run
from avo.config import ConfigError
from avo.lineage import Lineage, LineageError
from avo.paths import resolve
from avo.search.results import digest
from avo.seeds import vendor


@dataclass(frozen=True)
class Seed:
    source: str
    origin: str  # a human-readable provenance line for the first commit
    trailers: dict = field(default_factory=dict)  # more provenance, as trailers of the first commit


def from_module(name: str) -> Seed:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"seed kernel module:{name} cannot be found: {exc}") from None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ConfigError(f"seed kernel module:{name} is not an installed Python source module")
    return Seed(Path(spec.origin).read_text(), f"module:{name} ({spec.origin})")


def from_file(path: str) -> Seed:
    """A kernel file, or a package: a directory with `kernel.py`, or a `kernel.py` that imports
    modules beside it relatively (they come with it)."""
    p = resolve(path)
    if not p.exists():
        raise ConfigError(f"seed kernel {path!r} does not exist (looked for {p})")
    try:
        pkg = package.load(p.resolve(), strict=False)
    except package.PackageError as exc:
        raise ConfigError(f"seed kernel {path!r}: {exc}") from None
    return Seed(pkg.text(), str(path) if pkg.single else f"{path} (package: {', '.join(sorted(pkg.files))})")


def from_run(run_dir: str) -> Seed:
    """The run's best version: the archive's, its kernel read from the lineage commit and checked
    against the hash the archive recorded (the run's files may have been rewritten by a candidate);
    a lineage without an archive gives its last commit."""
    lineage = Lineage.of_run(resolve(run_dir))
    if not lineage.exists():
        raise ConfigError(f"search.transfer_from={run_dir!r} has no lineage/ (is it a run dir?)")
    try:
        sha = lineage.head()
        if sha is None:
            raise ConfigError(f"search.transfer_from={run_dir!r}: its lineage has no version yet")
        try:
            with open_run(resolve(run_dir)) as archive:
                best = archive.best()
        except FileNotFoundError:
            best = None
        if best is None:
            return Seed(lineage.show(sha), f"transferred from {resolve(run_dir)}@{sha}")
        source = lineage.blob(best.sha)
        if digest(source) != best.source_hash:
            raise ConfigError(f"search.transfer_from={run_dir!r}: lineage commit {best.sha[:10]} does not hold "
                              f"the kernel of version {best.version} that its archive recorded")
        return Seed(source.decode(), f"transferred from {resolve(run_dir)}@{best.sha}")
    except LineageError as exc:
        raise ConfigError(f"search.transfer_from={run_dir!r}: {exc}") from None


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def source_check(source: Any) -> str:
    """One line on whether `hardware.seed_source` can be met here (for a dry run's plan): the
    installed distribution and version, or what to install. Raises nothing."""
    pkg, pin = _get(source, "package"), _get(source, "version")
    dist, version = vendor.installed(pkg)
    want = f"{_get(source, 'distribution') or pkg}" + (f"=={pin}" if pin else "")
    if version is None:
        return f"{pkg} is not installed here: a run needs `pip install {want}`"
    if pin and version != pin:
        return f"{pkg} is {dist} {version} here, but {pin} is pinned: a run needs `pip install {want}`"
    return f"{pkg} from {dist} {version} (installed here)"


def from_sources(seed_kernel: str, source: Any) -> Seed:
    """The seed package: `seed_kernel` as its kernel.py, and `source.modules` of the installed
    `source.package` (with what they import of it) copied under `source.into/`, imports made
    relative, with their license files and an ORIGIN record (avo/seeds/vendor.py)."""
    entry = resolve(seed_kernel)
    if not entry.is_file():
        raise ConfigError(f"hardware.seed_kernel {seed_kernel!r} (the seed package's kernel.py) does not exist "
                          f"(looked for {entry})")
    pkg_name, modules = _get(source, "package"), list(_get(source, "modules") or [])
    into, pin = str(_get(source, "into") or "vendored"), _get(source, "version")
    if not pkg_name or not modules:
        raise ConfigError("hardware.seed_source needs a package and a list of modules")
    try:
        package.check_path(into)
    except package.PackageError:
        raise ConfigError(f"hardware.seed_source.into={into!r} is not a plain directory name") from None
    dist, version = vendor.installed(pkg_name)
    want = f"{_get(source, 'distribution') or pkg_name}" + (f"=={pin}" if pin else "")
    if version is None:
        raise ConfigError(f"hardware.seed_source: {pkg_name} is not installed here; `pip install {want}` "
                          f"(the seed is copied from your install at run start)")
    if pin and version != pin:
        raise ConfigError(f"hardware.seed_source pins {want}, but {dist} {version} is installed: "
                          f"`pip install {want}`, or set hardware.seed_source.version={version}")
    with tempfile.TemporaryDirectory(prefix="avo-seed-") as tmp:
        root = Path(tmp)
        shutil.copyfile(entry, root / package.ENTRY)
        try:
            origin = vendor.vendor(pkg_name, modules, root / into)
            pkg = package.from_entry(root / package.ENTRY, strict=False)
        except (vendor.VendorError, package.PackageError) as exc:
            raise ConfigError(f"hardware.seed_source: {exc}") from None
    unused = [m for m in origin.modules if f"{into}/{m}" not in pkg.files]
    if len(unused) == len(origin.modules):
        raise ConfigError(f"hardware.seed_kernel {seed_kernel!r} imports nothing of {into}/ relatively "
                          f"(e.g. `from .{into}.{modules[0]} import ...`): the copied modules would not be part of it")
    line = (f"{seed_kernel} + {len(origin.modules)} modules of {pkg_name} ({', '.join(modules)} and what they "
            f"import) copied from {origin.distribution} {origin.version} as installed, under {into}/ "
            f"(license: {origin.license}; {', '.join(origin.license_files)} and ORIGIN beside them)")
    return Seed(pkg.text(), line, trailers={"Seed-Source": f"{origin.distribution} {origin.version}",
                                            "Seed-Package": pkg_name, "Seed-License": origin.license})


def load(seed_kernel: str, transfer_from: Optional[str] = None, seed_source: Any = None) -> Seed:
    if transfer_from:
        return from_run(transfer_from)
    if seed_source:
        return from_sources(seed_kernel, seed_source)
    if seed_kernel.startswith("module:"):
        return from_module(seed_kernel[len("module:"):])
    return from_file(seed_kernel)
