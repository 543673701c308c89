"""Is a refactor of the sm90 kernel free? Compile a handful of configurations of two kernel files
for sm_90a on this (CPU) machine and compare the PTX the CuTe DSL generates, byte for byte.

  python bench/ptx_compare.py OLD.py NEW.py [--configs d128n,d128c] [--keep DIR]
  git show HEAD:kernels/cute_dsl/sm90/fmha_fwd.py > /tmp/old.py && \
      python bench/ptx_compare.py /tmp/old.py kernels/cute_dsl/sm90/fmha_fwd.py

One process per compile (the DSL reads CUTE_DSL_DUMP_DIR at import); both files are loaded under
the same module name, which the kernel's PTX entry name contains. Exit status 1 when any differ.
"""

import argparse
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

# name -> (knob overrides, head dim, causal, GQA ratio)
CONFIGS = {
    "d128n": ({}, 128, False, 1), "d128c": ({}, 128, True, 1), "d128c_r4": ({}, 128, True, 4),
    "d128n_r8": ({}, 128, False, 8), "d64n": ({}, 64, False, 1), "d64c": ({}, 64, True, 1),
    "d64c_m128": ({"block_m_d64": 128, "pingpong_d64": False}, 64, True, 1),
    "d128n_pp": ({"pingpong_d128": True}, 128, False, 1),
    "d128c_noov": ({"intra_wg_overlap": False}, 128, True, 1),
    "d128c_nopers": ({"persistent_causal": False}, 128, True, 1),
    "d128n_nopers": ({"persistent": False}, 128, False, 1),
}


def _compile_one(kernel, name):
    spec = importlib.util.spec_from_file_location("sm90_fmha_fwd_ptx", kernel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    over, d, causal, ratio = CONFIGS[name]
    mod.compile_kernel(dict(mod.KNOBS, **over), d, causal, ratio, tvm_ffi=False)


def dump(kernel, name, outdir):
    tmp = tempfile.mkdtemp(dir=outdir)
    env = dict(os.environ, CUTE_DSL_KEEP="ptx", CUTE_DSL_DUMP_DIR=tmp)
    subprocess.run([sys.executable, __file__, "--one", kernel, name], env=env, check=True)
    files = glob.glob(os.path.join(tmp, "*.ptx"))
    assert len(files) == 1, files
    path = os.path.join(outdir, name + ".ptx")
    shutil.move(files[0], path)
    shutil.rmtree(tmp)
    return path


def main():
    if sys.argv[1:2] == ["--one"]:
        return _compile_one(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--keep", default=None, help="keep the PTX files here (old/, new/)")
    args = ap.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="ptx_compare_")
    differ = []
    for name in args.configs.split(","):
        paths = []
        for side, kernel in (("old", args.old), ("new", args.new)):
            os.makedirs(os.path.join(root, side), exist_ok=True)
            paths.append(dump(os.path.abspath(kernel), name, os.path.join(root, side)))
        same = open(paths[0], "rb").read() == open(paths[1], "rb").read()
        print(f"{name:14s} {'identical' if same else 'DIFFERENT'}", flush=True)
        differ += [] if same else [name]
    if not args.keep:
        shutil.rmtree(root)
    print(f"{len(differ)} of {len(args.configs.split(','))} configurations differ" + (f": {differ}" if differ else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
