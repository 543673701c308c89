"""Device dev/bench script for kernels/cute_dsl/sm90/fmha_fwd.py (run on the H100).

  python3 bench/sm90_dev.py check            # correctness over smoke-like + reduced mha shapes
  python3 bench/sm90_dev.py bench [--quick]  # TFLOP/s of ours vs FA4 vs cuDNN over the mha suite
  python3 bench/sm90_dev.py all --variants '[{"block_n_d128": 176}]'

Correctness: fp32 torch reference, random inputs, NaN-poisoned out, relative Frobenius error
< 6e-3.  Timing: triton do_bench median, the three kernels interleaved round by round; the
ratio per shape is the median over rounds of ours/FA4 (and ours/cuDNN).
"""

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL = os.path.join(ROOT, "kernels", "cute_dsl", "sm90", "fmha_fwd.py")
TOL = 6e-3


def load_kernel(path=KERNEL):
    spec = importlib.util.spec_from_file_location("sm90_fmha_fwd", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reference(q, k, v, causal, scale):
    ratio = q.shape[2] // k.shape[2]
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    if ratio > 1:
        kf = kf.repeat_interleave(ratio, dim=1)
        vf = vf.repeat_interleave(ratio, dim=1)
    o = F.scaled_dot_product_attention(qf, kf, vf, is_causal=causal, scale=scale)
    return o.transpose(1, 2)


def rel_err(out, ref):
    o = out.float()
    if not torch.isfinite(o).all():
        return float("inf")
    return ((o - ref).norm() / ref.norm()).item()


CHECK_SHAPES = [
    # (b, s, hq, hkv, d)
    (2, 100, 4, 4, 64), (2, 257, 4, 1, 64), (1, 128, 2, 2, 128), (2, 257, 8, 2, 128),
    (1, 1, 2, 2, 128), (3, 63, 4, 4, 128), (1, 1000, 4, 4, 64), (1, 513, 8, 8, 128),
    (1, 1024, 16, 16, 128), (1, 2048, 16, 16, 128), (1, 4096, 32, 8, 128),
    (1, 8192, 16, 16, 128), (1, 2048, 32, 32, 64), (1, 4096, 64, 8, 128), (1, 16384, 16, 16, 128),
]


def check(mod, knobs, shapes=CHECK_SHAPES):
    rows = []
    for (b, s, hq, hk, d) in shapes:
        for causal in (False, True):
            torch.manual_seed(hash((b, s, hq, hk, d, causal)) % 2**31)
            q = torch.randn(b, s, hq, d, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16)
            scale = 1.0 / math.sqrt(d) if s % 2 else 0.7 / math.sqrt(d)
            out = torch.full_like(q, float("nan"))
            try:
                mod.attention(q, k, v, causal=causal, softmax_scale=scale, out=out, knobs=knobs)
                torch.cuda.synchronize()
                err = rel_err(out, reference(q, k, v, causal, scale))
                msg = ""
            except Exception as e:  # report and go on: one broken shape must not hide others
                err, msg = float("inf"), f"{type(e).__name__}: {str(e)[:200]}"
            ok = err < TOL
            rows.append(dict(b=b, s=s, hq=hq, hk=hk, d=d, causal=causal, err=err, ok=ok, msg=msg))
            print(f"check b={b} s={s} hq={hq} hk={hk} d={d} causal={causal}: err={err:.2e} "
                  f"{'OK' if ok else 'FAIL'} {msg}", flush=True)
    return rows


MHA = [(32, 1024), (16, 2048), (8, 4096), (4, 8192), (2, 16384)]


def suite(name):
    if name == "mha":
        return [(b, s, 16, 16, 128, c) for (b, s) in MHA for c in (False, True)]
    if name == "mha_d64":
        return [(b, s, 32, 32, 64, c) for (b, s) in MHA for c in (False, True)]
    if name == "gqa":
        return [(b, s, hq, 8, 128, c) for hq in (32, 64) for (b, s) in [(8, 4096), (4, 8192), (2, 16384)]
                for c in (False, True)]
    raise ValueError(name)


def bench(mod, knob_sets, shapes, rounds=3, rep_ms=60):
    import triton.testing as tt
    from flash_attn.cute.interface import flash_attn_func
    from torch.nn.attention import SDPBackend, sdpa_kernel

    results = []
    for (b, s, hq, hk, d, causal) in shapes:
        q = torch.randn(b, s, hq, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16)
        out = torch.empty_like(q)
        flops = 4 * b * hq * s * s * d / (2 if causal else 1)
        fns = {}
        for i, kn in enumerate(knob_sets):
            fns[f"ours{i}"] = (lambda kn=kn: mod.attention(q, k, v, causal=causal, out=out, knobs=kn))
        fns["fa4"] = lambda: flash_attn_func(q, k, v, causal=causal)
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))

        def cudnn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, enable_gqa=hq != hk)
        fns["cudnn"] = cudnn
        for f in fns.values():  # compile + warm
            f()
        torch.cuda.synchronize()
        tt.do_bench(fns["fa4"], warmup=200, rep=300)  # sustained warm-up for the clocks
        times = {n: [] for n in fns}
        for _ in range(rounds):
            for n, f in fns.items():
                times[n].append(tt.do_bench(f, warmup=20, rep=rep_ms, return_mode="median"))
        row = dict(b=b, s=s, hq=hq, hk=hk, d=d, causal=causal)
        for n in fns:
            row[n + "_ms"] = statistics.median(times[n])
            row[n + "_tflops"] = flops / row[n + "_ms"] / 1e9
        for i in range(len(knob_sets)):
            row[f"ours{i}_vs_fa4"] = statistics.median(
                [times["fa4"][r] / times[f"ours{i}"][r] for r in range(rounds)])
            row[f"ours{i}_vs_cudnn"] = statistics.median(
                [times["cudnn"][r] / times[f"ours{i}"][r] for r in range(rounds)])
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def geomean(xs):
    xs = [x for x in xs if x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["check", "bench", "all", "compile"])
    ap.add_argument("--variants", default="[]", help="JSON list of knob overrides to also run")
    ap.add_argument("--suites", default="mha")
    ap.add_argument("--quick", action="store_true", help="fewer shapes for bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--check-shapes", default="all", choices=["all", "small"])
    ap.add_argument("--tag", default="dev")
    ap.add_argument("--bench-sets", type=int, default=99, help="bench only the first N knob sets")
    args = ap.parse_args()

    mod = load_kernel()
    knob_sets = [dict(mod.KNOBS)] + [dict(mod.KNOBS, **v) for v in json.loads(args.variants)]
    outdir = os.environ.get("OUT", "/tmp")
    report = dict(device=torch.cuda.get_device_name(), knob_sets=knob_sets, tag=args.tag)

    # compile time per knob setting (first call compiles; shapes do not recompile)
    comp = []
    for i, kn in enumerate(knob_sets):
        for d in (64, 128):
            for causal in (False, True):
                t0 = time.perf_counter()
                try:
                    mod.compile_kernel(kn, d, causal, 1)
                    comp.append(dict(set=i, d=d, causal=causal, seconds=round(time.perf_counter() - t0, 2)))
                except Exception as e:
                    comp.append(dict(set=i, d=d, causal=causal, error=f"{type(e).__name__}: {str(e)[:300]}"))
                print("compile", comp[-1], flush=True)
    report["compile"] = comp

    if args.mode in ("check", "all"):
        shapes = CHECK_SHAPES if args.check_shapes == "all" else CHECK_SHAPES[:8]
        report["check"] = {}
        for i, kn in enumerate(knob_sets):
            rows = check(mod, kn, shapes)
            report["check"][i] = rows
            print(f"set {i}: {sum(r['ok'] for r in rows)}/{len(rows)} ok", flush=True)

    if args.mode in ("bench", "all"):
        shapes = []
        for sname in args.suites.split(","):
            sh = suite(sname)
            if args.quick:
                sh = [x for x in sh if x[1] in (1024, 8192)]
            shapes += sh
        knob_sets = knob_sets[: args.bench_sets]
        res = bench(mod, knob_sets, shapes, rounds=args.rounds)
        report["bench"] = res
        print("\n| shape | " + " | ".join(f"ours{i}" for i in range(len(knob_sets))) + " | fa4 | cudnn | ratios vs fa4 |")
        for r in res:
            lab = f"b{r['b']} s{r['s']} h{r['hq']}/{r['hk']} d{r['d']} {'C' if r['causal'] else 'N'}"
            ours = " | ".join(f"{r[f'ours{i}_tflops']:.0f}" for i in range(len(knob_sets)))
            rat = " ".join(f"{r[f'ours{i}_vs_fa4']:.3f}" for i in range(len(knob_sets)))
            print(f"| {lab} | {ours} | {r['fa4_tflops']:.0f} | {r['cudnn_tflops']:.0f} | {rat} |")
        for i in range(len(knob_sets)):
            g = geomean([r[f"ours{i}_tflops"] for r in res])
            gr = geomean([r[f"ours{i}_vs_fa4"] for r in res])
            gc = geomean([r[f"ours{i}_vs_cudnn"] for r in res])
            report[f"geomean_set{i}"] = dict(tflops=g, vs_fa4=gr, vs_cudnn=gc)
            print(f"set {i}: geomean {g:.0f} TFLOP/s, x{gr:.3f} of FA4, x{gc:.3f} of cuDNN  knobs={knob_sets[i]}")
        report["geomean_fa4"] = geomean([r["fa4_tflops"] for r in res])
        report["geomean_cudnn"] = geomean([r["cudnn_tflops"] for r in res])
        print(f"FA4 geomean {report['geomean_fa4']:.0f}, cuDNN {report['geomean_cudnn']:.0f}")

    with open(os.path.join(outdir, f"sm90_dev_{args.tag}.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
