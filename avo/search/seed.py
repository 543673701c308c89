"""Where the first version of the lineage comes from.

`hardware.seed_kernel` is a file ("kernels/....py", relative to the cwd or the repo root), a
package directory (its `kernel.py` and the modules it imports relatively: avo.package), or an
installed module ("module:pkg.mod", whose source file is copied); `search.transfer_from` (a run
dir) overrides both with that run's best version, recorded in the lineage's first commit.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from avo import package
from avo.archive import open_run
from avo.config import ConfigError
from avo.lineage import Lineage, LineageError
from avo.paths import resolve
from avo.search.results import digest


@dataclass(frozen=True)
class Seed:
    source: str
    origin: str  # a human-readable provenance line for the first commit


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


def load(seed_kernel: str, transfer_from: Optional[str] = None) -> Seed:
    if transfer_from:
        return from_run(transfer_from)
    if seed_kernel.startswith("module:"):
        return from_module(seed_kernel[len("module:"):])
    return from_file(seed_kernel)
