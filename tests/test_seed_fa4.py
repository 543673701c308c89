"""Seeds from installed sources (P2-h): FlashAttention-4's own forward, copied from the install into
a seed package at run start (`hardware.seed_source`), compiled for sm_100a and sm_90a on a CPU.

The FA4 tests need the pinned flash-attn-4 (and quack, which imports triton) installed, as the
README's setup does; the configuration errors are checked everywhere."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from avo import package
from avo.config import ConfigError
from avo.evaluate.judge.owncode import static_violation
from avo.search import seed as seeds

ROOT = Path(__file__).resolve().parents[1]
B200 = OmegaConf.load(ROOT / "conf/hardware/b200.yaml")
PIN = B200.seed_source.version


def _fa4_installed():
    _, version = seeds.vendor.installed("flash_attn.cute")
    if version is None:
        pytest.skip("flash-attn-4 is not installed (pip install -e '.[dev]' installs it)")
    if version != PIN:
        pytest.skip(f"flash-attn-4 {version} is installed, the configs pin {PIN}")


@pytest.fixture(scope="module")
def fa4_seed():
    _fa4_installed()
    return seeds.from_sources(B200.seed_kernel, B200.seed_source)


def test_the_b200_seed_is_fa4s_own_forward_copied_with_its_license(fa4_seed):
    pkg = package.parse(fa4_seed.source)
    files = set(pkg.files)
    assert {"kernel.py", "fa4/__init__.py", "fa4/interface.py", "fa4/flash_fwd_sm100.py", "fa4/flash_fwd_sm90.py",
            "fa4/softmax.py", "fa4/tile_scheduler.py", "fa4/LICENSE", "fa4/AUTHORS", "fa4/ORIGIN"} <= files
    assert pkg.files["kernel.py"] == (ROOT / B200.seed_kernel).read_text()
    origin = json.loads(pkg.files["fa4/ORIGIN"])
    assert (origin["distribution"], origin["version"], origin["package"]) == ("flash-attn-4", PIN, "flash_attn.cute")
    assert "BSD" in origin["license"] and {"flash_fwd_sm100.py", "flash_fwd_sm90.py"} <= set(origin["modules"])
    assert fa4_seed.trailers == {"Seed-Source": f"flash-attn-4 {PIN}", "Seed-Package": "flash_attn.cute",
                                 "Seed-License": origin["license"]}
    assert f"flash-attn-4 {PIN}" in fa4_seed.origin
    for rel in pkg.modules():
        tree = ast.parse(pkg.files[rel])
        absolute = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0
                    and (n.module or "").split(".")[0] == "flash_attn"]
        absolute += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                     if a.name.split(".")[0] == "flash_attn"]
        assert not absolute, (rel, absolute)  # every import of FA4 is now of the copy
        # the copy is the candidate's own code: the evaluator's own-code rule must see no library
        assert static_violation(pkg.files[rel]) is None, rel


# The compile check runs in a child: CuTe DSL reads its target arch once per process. The GPU's
# SM count, which FA4's persistent schedulers ask the driver for while tracing, is the target's.
_COMPILE = textwrap.dedent("""
    import importlib, os, sys, types
    root, arch, sms = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import cutlass.utils

    class TargetInfo:
        def get_device_multiprocessor_count(self):
            return sms

        def get_max_active_clusters(self, cluster_size):
            return sms // cluster_size

    cutlass.utils.HardwareInfo = TargetInfo
    pkg = types.ModuleType("avo_seed_fa4")
    pkg.__path__ = [root]
    sys.modules["avo_seed_fa4"] = pkg
    mod = importlib.import_module("avo_seed_fa4.kernel")
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    shapes = [(2, 1024, 16, 16, 128), (1, 640, 32, 4, 128), (2, 512, 16, 16, 64)]  # MHA, GQA 8:1, d64
    with FakeTensorMode():
        for b, s, hq, hkv, d in shapes:
            for causal in (False, True):
                q = torch.empty(b, s, hq, d, dtype=torch.bfloat16, device="cuda")
                k = torch.empty(b, s, hkv, d, dtype=torch.bfloat16, device="cuda")
                out = torch.empty_like(q)
                assert mod.attention(q, k, k, causal=causal, out=out) is out
    compiled = list(mod._flash_attn_fwd.compile_cache.cache.values())
    assert len(compiled) == 2 * len(shapes) and all("Compiled" in type(c).__name__ for c in compiled), compiled
    # the copy is self-contained: the installed FA4 was never imported
    assert not [m for m in sys.modules if m.split(".")[0] == "flash_attn"]
    print("compiled", len(compiled), "forward kernels for", os.environ["CUTE_DSL_ARCH"])
""")


@pytest.mark.slow
@pytest.mark.parametrize("arch, sms", [("100", 148), ("90", 132)])
def test_the_vendored_forward_compiles_for_sm100a_and_sm90a_on_a_cpu(fa4_seed, tmp_path, arch, sms):
    root = tmp_path / "seed"
    package.parse(fa4_seed.source).write(root)
    script = tmp_path / "compile.py"
    script.write_text(_COMPILE)
    env = {**os.environ, "CUTE_DSL_ARCH": f"sm_{arch}a", "FLASH_ATTENTION_ARCH": arch,
           "FLASH_ATTENTION_NUM_SMS": str(sms), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(script), str(root), arch, str(sms)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"compiled 6 forward kernels for sm_{arch}a" in proc.stdout


def test_a_pin_that_is_not_installed_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(seeds.vendor, "installed", lambda pkg: ("flash-attn-4", "4.0.0b1"))
    with pytest.raises(ConfigError, match=r"pins flash-attn-4==4.0.0b36, but flash-attn-4 4.0.0b1 is installed"):
        seeds.from_sources(B200.seed_kernel, B200.seed_source)
    monkeypatch.setattr(seeds.vendor, "installed", lambda pkg: (None, None))
    with pytest.raises(ConfigError, match=r"not installed here; `pip install flash-attn-4==4.0.0b36`"):
        seeds.from_sources(B200.seed_kernel, B200.seed_source)
    assert "a run needs `pip install flash-attn-4==4.0.0b36`" in seeds.source_check(B200.seed_source)


def test_a_seed_kernel_that_imports_none_of_the_copy_is_refused(tmp_path, monkeypatch):
    site = tmp_path / "site"
    for rel, text in {"tinypkg/__init__.py": "", "tinypkg/mod.py": "X = 1\n",
                      "tiny-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tiny\nVersion: 1.0\nLicense: MIT\n",
                      "tiny-1.0.dist-info/top_level.txt": "tinypkg\n",
                      "tiny-1.0.dist-info/licenses/LICENSE": "MIT\n"}.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    (site / "tiny-1.0.dist-info/RECORD").write_text("tiny-1.0.dist-info/licenses/LICENSE,,\n")
    monkeypatch.syspath_prepend(str(site))
    import importlib

    importlib.invalidate_caches()
    entry = tmp_path / "entry.py"
    entry.write_text("def attention(q, k, v, causal=False, softmax_scale=None):\n    return q\n")
    src = {"package": "tinypkg", "modules": ["mod"], "into": "tiny", "version": "1.0"}
    with pytest.raises(ConfigError, match="imports nothing of tiny/"):
        seeds.from_sources(str(entry), src)
    with pytest.raises(ConfigError, match="not a plain directory name"):
        seeds.from_sources(str(entry), {**src, "into": "../up"})
    entry.write_text("from .tiny.mod import X\n\ndef attention(q, k, v, causal=False, softmax_scale=None):\n"
                     "    return q * X\n")
    got = package.parse(seeds.from_sources(str(entry), src).source)
    assert sorted(got.files) == ["kernel.py", "tiny/LICENSE", "tiny/ORIGIN", "tiny/__init__.py", "tiny/mod.py"]
    sys.modules.pop("tinypkg", None)
