"""Where the config tree and the repository's own files live, in a clone or an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def repo_root() -> Path | None:
    """The clone this package runs from (editable install or `python -m` in a checkout), if any."""
    root = _PKG.parent
    return root if (root / "conf" / "config.yaml").is_file() else None


def conf_dir() -> Path:
    """conf/ beside the package in a clone; else the copy shipped inside the wheel (avo/conf)."""
    root = repo_root()
    if root is not None:
        return root / "conf"
    packaged = _PKG / "conf"
    if (packaged / "config.yaml").is_file():
        return packaged
    raise FileNotFoundError(f"avo's config tree is missing: neither {_PKG.parent / 'conf'} nor {packaged}")


def packaged_notes() -> Path:
    """The curated knowledge notes shipped inside the wheel (knowledge/ in a clone)."""
    return _PKG / "notes"


def resolve(path: str | Path, base: Path | None = None) -> Path:
    """A user-given path: absolute as is; relative ones against the cwd, then the repo root / base."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for root in (Path.cwd(), base, repo_root()):
        if root is not None and (root / p).exists():
            return (root / p).resolve()
    return (Path.cwd() / p).resolve()
