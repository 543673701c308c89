"""`python -m avo.runs`: what a run found, without git or sqlite3.

    python -m avo.runs list [DIR ...]              every run under DIR (default outputs/): best score, versions, cost
    python -m avo.runs versions RUN                the lineage of one run, seed first
    python -m avo.runs show RUN [VERSION]          one version (default: the best): rationale, per-shape table, diff
    python -m avo.runs export RUN [VERSION] OUT    write a version's kernel file (default: the best) to OUT

Read-only (nothing of the run is changed); a version's kernel comes from the run's lineage and is
checked against the hash the archive recorded for it, so what is exported is what was measured.
Scores are the suite's geometric-mean TFLOP/s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from avo import package
from avo.archive import FILENAME, Archive, DamagedArchive, Version, source_hash
from avo.errors import fail
from avo.lineage import Lineage, LineageError

UNIT = "TFLOP/s"


def find_runs(roots: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        r = Path(root)
        if (r / FILENAME).is_file():
            out.append(r)
        elif r.is_dir():
            out += sorted(p.parent for p in r.rglob(FILENAME) if "lineage" not in p.parts)
    return out


def _score(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4g}"


def _speedups(sp: Optional[dict]) -> str:
    return " ".join(f"{k} x{v:.3f}" for k, v in sorted((sp or {}).items()) if isinstance(v, (int, float)))


def _open(run: str) -> Archive:
    if not (Path(run) / FILENAME).is_file():
        fail(f"{run} is not a run dir (no {FILENAME}); `python -m avo.runs list` lists the runs")
    return Archive(run, readonly=True)


def _version(arch: Archive, which: Optional[str]) -> Version:
    versions = arch.versions()
    if not versions:
        fail("the run has no versions yet (not even its seed)")
    if which in (None, "best"):
        return versions[-1]
    key = which[1:] if which.startswith("v") else which
    if not key.isdigit() or int(key) >= len(versions):
        fail(f"no version {which!r}: the run has v0..v{len(versions) - 1}")
    return versions[int(key)]


def cmd_list(roots: Sequence[str]) -> int:
    runs = find_runs(roots or ["outputs"])
    if not runs:
        fail(f"no runs under {', '.join(roots or ['outputs'])}")
    print(f"{'run':48s} {'best':>10s}  {'versions':>8s} {'accepted':>13s} {'cost':>8s}  best kernel")
    for run in runs:
        try:
            with Archive(run, readonly=True) as arch:
                versions, best, totals = arch.versions(), arch.best(), arch.totals()
                n = arch.count()
        except DamagedArchive as exc:  # one bad run must not hide the others
            print(f"{str(run)[-48:]:48s} {'-':>10s}  {'-':>8s} {'-':>13s} {'-':>8s}  ({str(exc)[:160]})")
            continue
        path = str(run / best.path) if best is not None and best.path else "-"
        print(f"{str(run)[-48:]:48s} {_score(best.score if best else None):>10s}  {len(versions):>8d} "
              f"{totals['accepted']:>5d} of {n:<5d} {'$' + format(totals['cost_usd'], '.2f'):>8s}  {path}")
    print(f"scores: {UNIT} (geometric mean over the suite)")
    return 0


def cmd_versions(run: str) -> int:
    with _open(run) as arch:
        versions = arch.versions()
    print(f"{'v':>3s} {'cand':>5s} {'score':>10s}  {'speedups':24s} rationale")
    for v in versions:
        why = (v.rationale or "seed").splitlines()[0][:70] if (v.rationale or "seed") else ""
        print(f"{v.version:>3d} {v.candidate:>5d} {_score(v.score):>10s}  {_speedups(v.speedups):24s} {why}")
    print(f"scores: {UNIT}")
    return 0


def _kernel(run: str, v: Version) -> str:
    try:
        source = Lineage.of_run(run).blob(v.version).decode()
    except (LineageError, UnicodeDecodeError) as exc:
        fail(f"v{v.version}'s kernel could not be read from {run}/lineage: {exc}")
    if v.source_hash and source_hash(source) != v.source_hash:
        fail(f"v{v.version}'s kernel in the lineage does not match the hash the archive recorded: "
             f"the run dir was modified; nothing exported")
    return source


def cmd_show(run: str, which: Optional[str]) -> int:
    with _open(run) as arch:
        v = _version(arch, which)
        cand = arch.candidate(v.candidate) if v.candidate else None
        # Its parent is the version its candidate was made from: after a restart of the search
        # from an older version, not the one before it.
        parent = arch.version_of(cand.parent) if cand is not None and cand.parent is not None else None
    print(f"v{v.version} (candidate {v.candidate}): score {_score(v.score)} {UNIT}  {_speedups(v.speedups)}")
    if cand is not None and cand.incumbent_ratio is not None:
        print(f"accepted at x{cand.incumbent_ratio:.4f} against its incumbent (paired ratio, "
              f"noise ±{cand.incumbent_ratio_spread or 0:.4f})")
    print(f"kernel: {Path(run) / v.path if v.path else '-'}")
    print("\n" + (v.rationale or "(the seed)").strip() + "\n")
    rows = v.metrics or []
    if rows:
        names = sorted({k for r in rows for k in (r.get("baseline_ratios") or {})})
        print(f"{'shape':32s} {'TFLOP/s':>9s} {'ms':>9s} " + " ".join(f"{'x ' + n:>9s}" for n in names))
        for r in rows:
            ratios = r.get("baseline_ratios") or {}
            cells = " ".join(f"{ratios[n]:>9.3f}" if isinstance(ratios.get(n), (int, float)) else f"{'-':>9s}"
                             for n in names)
            print(f"{str(r.get('label'))[:32]:32s} {r.get('tflops') or 0:>9.4g} {r.get('time_ms') or 0:>9.4g} {cells}")
    if v.version > 0:
        base = parent.version if parent is not None else v.version - 1
        try:
            diff = Lineage.of_run(run).diff(base, v.version)
        except LineageError as exc:
            diff = f"(no diff: {exc})"
        print(f"\ndiff v{base} (its parent) -> v{v.version}:\n{diff}")
    return 0


def cmd_export(run: str, which: Optional[str], out: str) -> int:
    with _open(run) as arch:
        v = _version(arch, which)
    source = _kernel(run, v)
    pkg = package.parse(source)
    dest = Path(out)
    try:
        if pkg.single:
            if dest.is_dir():
                dest = dest / f"kernel_v{v.version}.py"
            dest.write_text(source)
        else:  # a package: its files into a directory (`kernel_vN/` inside an existing one)
            if dest.is_dir():
                dest = dest / f"kernel_v{v.version}"
            if dest.exists():
                fail(f"{dest} exists; export a package into a new directory")
            pkg.write(dest)
    except OSError as exc:
        fail(f"cannot write {dest}: {exc.strerror or exc}")
    what = "" if pkg.single else f" package: {len(pkg.files)} files, entry {package.ENTRY}"
    print(f"wrote {dest} (v{v.version}, score {_score(v.score)} {UNIT}){what}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avo.runs", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every run under the dirs").add_argument("dirs", nargs="*")
    sub.add_parser("versions", help="the lineage of one run").add_argument("run")
    s = sub.add_parser("show", help="one version: rationale, per-shape table, diff to its parent")
    s.add_argument("run")
    s.add_argument("version", nargs="?", help="v3, 3 or best (default)")
    e = sub.add_parser("export", help="write a version's kernel file")
    e.add_argument("run")
    e.add_argument("args", nargs="+", metavar="[VERSION] OUT")
    a = p.parse_args(argv)
    try:
        if a.cmd == "list":
            return cmd_list(a.dirs)
        if a.cmd == "versions":
            return cmd_versions(a.run)
        if a.cmd == "show":
            return cmd_show(a.run, a.version)
        if len(a.args) > 2:
            fail("export takes [VERSION] OUT")
        which, out = (a.args[0], a.args[1]) if len(a.args) == 2 else (None, a.args[0])
        return cmd_export(a.run, which, out)
    except DamagedArchive as exc:
        fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
