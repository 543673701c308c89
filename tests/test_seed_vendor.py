"""Seeds from installed sources (P2-h, first part): an installed package's modules copied into a
seed package with their imports made relative, its license beside them, its origin recorded."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from avo.seeds.vendor import VendorError, closure, rewrite_imports, vendor

FILES = {
    "fakepkg/__init__.py": "",
    "fakepkg/cute/__init__.py": "",
    "fakepkg/cute/entry.py": """
        # entrée: a comment with a non-ASCII letter before the imports
        import math
        from fakepkg.cute.helper import twice
        from fakepkg.cute import sub
        import fakepkg.cute.sub.deep as deep


        def f(x):
            from fakepkg.cute.late import plus_one  # a lazy import, as FA4's flash_fwd has

            return plus_one(twice(x)) + deep.DEPTH + sub.LEVEL + int(math.sqrt(1))
        """,
    "fakepkg/cute/helper.py": """
        from fakepkg.cute.sub.deep import DEPTH


        def twice(x):
            return 2 * x + 0 * DEPTH
        """,
    "fakepkg/cute/late.py": "def plus_one(x):\n    return x + 1\n",
    "fakepkg/cute/unused.py": "X = 1\n",
    "fakepkg/cute/sub/__init__.py": "from fakepkg.cute.sub.deep import DEPTH\nLEVEL = 10 + 0 * DEPTH\n",
    "fakepkg/cute/sub/deep.py": "from fakepkg.cute.late import plus_one\nDEPTH = plus_one(99)\n",
    "fake_dist-1.2.3.dist-info/METADATA": "Metadata-Version: 2.1\nName: fake-dist\nVersion: 1.2.3\nLicense: BSD 3-Clause License\n",
    "fake_dist-1.2.3.dist-info/top_level.txt": "fakepkg\n",
    "fake_dist-1.2.3.dist-info/licenses/LICENSE": "BSD 3-Clause License\nCopyright (c) the fake authors\n",
    "fake_dist-1.2.3.dist-info/licenses/AUTHORS": "The fake authors\n",
}


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    for rel, text in FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))
    record = [f"{rel},," for rel in FILES]
    (root / "fake_dist-1.2.3.dist-info/RECORD").write_text("\n".join(record) + "\n")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    yield root
    for name in [m for m in sys.modules if m == "fakepkg" or m.startswith(("fakepkg.", "seedpkg"))]:
        del sys.modules[name]


def test_the_closure_follows_imports_inside_functions_and_subpackages(site):
    assert closure("fakepkg.cute", ["entry"]) == ["entry", "helper", "late", "sub", "sub.deep"]


def test_a_vendored_seed_runs_without_the_package_it_came_from(site, tmp_path, monkeypatch):
    dest = tmp_path / "seeds" / "seedpkg"
    origin = vendor("fakepkg.cute", ["entry"], dest)
    assert sorted(origin.modules) == ["entry.py", "helper.py", "late.py", "sub/__init__.py", "sub/deep.py"]
    assert (origin.distribution, origin.version, origin.license) == ("fake-dist", "1.2.3", "BSD 3-Clause License")
    assert origin.sha256["entry.py"] == hashlib.sha256((site / "fakepkg/cute/entry.py").read_bytes()).hexdigest()
    assert sorted(origin.license_files) == ["AUTHORS", "LICENSE"] and (dest / "LICENSE").is_file()
    text = (dest / "entry.py").read_text()
    assert "fakepkg" not in text and "import math" in text and "entrée" in text
    assert "from .late import plus_one" in text and "from .sub import deep as deep" in text
    assert "from ..late import plus_one" in (dest / "sub/deep.py").read_text()
    # The original package gone from the path: the seed imports only itself.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    for name in [m for m in sys.modules if m == "fakepkg" or m.startswith("fakepkg.")]:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(dest.parent))
    importlib.invalidate_caches()
    entry = importlib.import_module("seedpkg.entry")
    assert entry.f(3) == (2 * 3 + 1) + 100 + 10 + 1
    assert "fakepkg" not in sys.modules


def test_what_cannot_be_made_relative_is_one_line(site):
    with pytest.raises(VendorError, match=r"line 1: `import fakepkg.cute.X` without `as`"):
        rewrite_imports("import fakepkg.cute.helper\n", "fakepkg.cute", "entry")
    with pytest.raises(VendorError, match="not an installed package|not importable"):
        vendor("nopkg_at_all.cute", ["x"], site / "out")
    with pytest.raises(VendorError, match="not found"):
        closure("fakepkg.cute", ["missing"])


def test_without_a_license_file_nothing_is_vendored(site, tmp_path):
    for lic in (site / "fake_dist-1.2.3.dist-info/licenses").iterdir():
        lic.unlink()
    with pytest.raises(VendorError, match="no license file"):
        vendor("fakepkg.cute", ["late"], tmp_path / "s")
    assert not (tmp_path / "s").exists()


def _fa4_installed() -> bool:
    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except (ImportError, ValueError):
        return False


@pytest.mark.skipif(not _fa4_installed(), reason="flash_attn.cute (flash-attn-4) is not installed")
@pytest.mark.parametrize("entry, count", [("flash_fwd_sm90", 17), ("flash_fwd_sm100", 18)])
def test_fa4s_forward_vendors_whole_with_no_absolute_import_left(tmp_path, entry, count):
    # Counts of the pinned 4.0.0b36 (knowledge/fa4_package.md); another version may differ.
    import ast
    import importlib.metadata

    if importlib.metadata.version("flash-attn-4") != "4.0.0b36":
        pytest.skip("the module counts are those of flash-attn-4 4.0.0b36")
    origin = vendor("flash_attn.cute", [entry], tmp_path / "seed")
    assert len(origin.modules) == count and f"{entry}.py" in origin.modules
    assert origin.version == "4.0.0b36" and "BSD" in (origin.license or "")
    assert {"LICENSE", "AUTHORS"} <= set(origin.license_files)
    for rel in origin.modules:
        tree = ast.parse((tmp_path / "seed" / rel).read_text())
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [x for x in names if x.startswith("flash_attn")], (rel, names)
