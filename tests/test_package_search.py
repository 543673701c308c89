"""A multi-file smoke search (P2-h): the CPU reference split over modules as the seed, evolved by the
knob operator, stopped and resumed; every version's files are in the lineage and are what was
evaluated; the best exports as a directory and seeds a transfer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from avo import package
from avo.archive import Archive, source_hash
from avo.lineage import Lineage

from test_package import FILES, write_tree

ROOT = Path(__file__).resolve().parents[1]


def _avo(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "avo", "+experiment=smoke", "logger=none", "evaluator.repeats=5",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_a_package_seed_is_searched_resumed_exported_and_transferred(tmp_path):
    seed = write_tree(tmp_path / "seed", FILES)
    run = tmp_path / "run"
    first = _avo(f"hardware.seed_kernel={seed}", "search.max_iterations=2", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (run / "candidates/0000/kernel.avopkg").is_file()
    lineage = Lineage.of_run(run)
    tree = lineage._git("ls-tree", "-r", "--name-only", lineage.versions()[0].sha).split()
    assert {"kernel/kernel.py", "kernel/attn.py", "kernel/sub/mask.py", "kernel/LICENSE"} <= set(tree)
    assert "kernel.py" not in tree
    assert lineage.versions()[0].subject.startswith(f"seed: {seed} (package: LICENSE, attn.py, kernel.py")

    second = _avo(f"hardware.seed_kernel={seed}", "search.max_iterations=3", f"hydra.run.dir={run}")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming" in second.stdout
    archive = Archive(run)
    assert [c.id for c in archive.candidates()] == [1, 2, 3]
    for c in archive.candidates():  # each proposal kept the other files and moved the entry's knobs
        assert c.status != "operator_error", c.message
    versions = archive.versions()
    # block_m 16 -> 32 or more is several times faster on a CPU: the search finds it
    assert len(versions) >= 2, [(c.id, c.verdict, c.message) for c in archive.candidates()]
    for v in versions:  # each version's files, as committed, are the bytes that were evaluated
        assert source_hash(lineage.blob(v.sha).decode()) == v.source_hash
        assert (run / v.path).name == "kernel.avopkg"
        pkg = package.parse((run / v.path).read_text())
        assert pkg.files["attn.py"] == (seed / "attn.py").read_text()
    archive.close()

    out = tmp_path / "exported"
    exported = subprocess.run([sys.executable, "-m", "avo.runs", "export", str(run), str(out)],
                              capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    assert "package: 5 files" in exported.stdout
    assert (out / "sub" / "mask.py").read_text() == (seed / "sub" / "mask.py").read_text()

    transfer = tmp_path / "transfer"
    third = _avo(f"search.transfer_from={run}", "search.max_iterations=0", f"hydra.run.dir={transfer}")
    assert third.returncode == 0, third.stderr[-3000:]
    best = Lineage.of_run(run).blob(versions[-1].sha)
    assert Lineage.of_run(transfer).blob(0) == best
