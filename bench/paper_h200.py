"""The AVO paper's grid (`conf/attention/paper.yaml`) on a Hopper GPU: our kernel timed interleaved
with FlashAttention-3, cuDNN and FlashAttention-4, by a harness independent of the evaluator.

  python3 bench/paper_h200.py --json OUT.json [--repeats 40] [--kernels ours,fa3,cudnn,fa4]
        [--variants '{"n176": {"block_n_d128": 176}}'] [--variant-rows noncausal]
  python3 bench/paper_h200.py --ncu ours --shape 1,32768,16,16,0   # one shape, 3 launches (for ncu)

Method (what it found: knowledge/fa3_vs_ours_h200.md, bench/results/h200_2026-12-01_SUMMARY.md):
  * inputs: `--sets` fresh random input sets per shape (seeded from os.urandom, recorded), the
    set rotated every repeat; the L2 (60 MB on the H200) flushed by zeroing a 256 MB buffer
    before every timed call, then a ~100 us GPU spin so that the launch is queued before the start
    event fires (the times are the kernels', not Python's launch overhead);
  * a sustained warm-up (~3 s of attention launches) before the first shape, a short one per shape;
  * every repeat times every kernel once, in an order shuffled per repeat (interleaved), with
    CUDA events; per shape a kernel's time is the median over repeats, and a ratio X/Y is the
    median over repeats of the per-repeat ratios (same repeat, same input set) with a 95 %
    distribution-free interval of that median (order statistics); `ours_again` is our kernel
    timed a second time, so ours/ours_again is the noise floor of the method;
  * correctness: our kernel writes into a NaN-poisoned buffer; on the first, a middle and the
    last repeat every kernel's output is compared on 64 sampled query rows per (batch, head)
    with an fp32 reference of those rows (relative Frobenius error < 6e-3); sets differ, so a
    stale output from another set fails too;
  * geomeans over shapes, with a 95 % bootstrap interval (repeats resampled per shape).
"""

import argparse
import importlib.util
import json
import math
import os
import random
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL = os.path.join(ROOT, "kernels", "cute_dsl", "sm90", "fmha_fwd.py")
TOL = 6e-3
CHECK_ROWS = 64


def paper_shapes():
    """(batch, seqlen, heads_q, heads_kv, head_dim, causal) from conf/attention/paper.yaml."""
    import yaml

    with open(os.path.join(ROOT, "conf", "attention", "paper.yaml")) as f:
        rows = yaml.safe_load(f)["shapes"]
    return [(r["batch"], r["seqlen"], r["heads_q"], r["heads_kv"], r["head_dim"], r["causal"]) for r in rows]


def label(shape):
    b, s, hq, hk, d, c = shape
    return f"b{b} s{s} h{hq}/{hk} {'causal' if c else 'non-causal'}"


def flops(shape):
    b, s, hq, hk, d, c = shape
    return 4.0 * b * hq * s * s * d / (2 if c else 1)


def load_ours(path=KERNEL):
    spec = importlib.util.spec_from_file_location("sm90_fmha_fwd_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_kernels(names, variants, kernel_path):
    """name -> fn(q, k, v, causal, scale, out) returning the output; `out` is a poisoned buffer
    that our kernel writes into (the libraries allocate their own). Missing libraries are noted."""
    fns, notes = {}, {}
    if any(n.startswith("ours") for n in names) or variants:
        mod = load_ours(kernel_path)

        def ours(knobs=None):
            return lambda q, k, v, c, s, out: mod.attention(q, k, v, causal=c, softmax_scale=s, out=out, knobs=knobs)

        for n in names:
            if n in ("ours", "ours_again"):
                fns[n] = ours()
        for vname, over in variants.items():
            fns[vname] = ours(dict(mod.KNOBS, **over))
    if "fa3" in names:
        try:
            from flash_attn_interface import flash_attn_func as fa3

            def call_fa3(q, k, v, c, s, out):
                res = fa3(q, k, v, softmax_scale=s, causal=c)
                return res[0] if isinstance(res, tuple) else res

            fns["fa3"] = call_fa3
        except Exception as exc:
            notes["fa3"] = f"unavailable: {type(exc).__name__}: {exc}"[:300]
    if "fa4" in names:
        try:
            from flash_attn.cute import flash_attn_func as fa4

            def call_fa4(q, k, v, c, s, out):
                res = fa4(q, k, v, softmax_scale=s, causal=c)
                return res[0] if isinstance(res, tuple) else res

            fns["fa4"] = call_fa4
        except Exception as exc:
            notes["fa4"] = f"unavailable: {type(exc).__name__}: {exc}"[:300]
    if "cudnn" in names:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def call_cudnn(q, k, v, c, s, out):
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                   is_causal=c, scale=s, enable_gqa=q.shape[2] != k.shape[2])
            return o.transpose(1, 2)

        fns["cudnn"] = call_cudnn
    return fns, notes


def reference_rows(q, k, v, causal, scale, idx):
    """fp32 attention output of query rows `idx` (all batches and heads): (b, len(idx), hq, d)."""
    ratio = q.shape[2] // k.shape[2]
    qs = q[:, idx].float().permute(0, 2, 1, 3)  # b, hq, r, d
    out = torch.empty(q.shape[0], q.shape[2], len(idx), q.shape[3], device=q.device)
    for hk in range(k.shape[2]):  # one kv head at a time keeps the fp32 scores small
        kf = k[:, :, hk].float()  # b, s, d
        vf = v[:, :, hk].float()
        qh = qs[:, hk * ratio:(hk + 1) * ratio]  # b, ratio, r, d
        sc = torch.einsum("bgrd,bsd->bgrs", qh, kf) * scale
        if causal:
            cols = torch.arange(k.shape[1], device=q.device)
            sc = sc.masked_fill(cols[None, None, None, :] > idx[None, None, :, None], float("-inf"))
        out[:, hk * ratio:(hk + 1) * ratio] = torch.einsum("bgrs,bsd->bgrd", torch.softmax(sc, dim=-1), vf)
    return out.permute(0, 2, 1, 3)


def rel_err(o, ref):
    o = o.float()
    if not torch.isfinite(o).all():
        return float("inf")
    return ((o - ref).norm() / ref.norm()).item()


def median_ci(xs):
    """Median and a 95 % distribution-free interval (order statistics of the sample)."""
    xs = sorted(xs)
    n = len(xs)
    med = float(np.median(xs))
    h = 1.96 * math.sqrt(n) / 2
    lo, hi = max(0, int(math.floor(n / 2 - h))), min(n - 1, int(math.ceil(n / 2 + h)) - 1)
    return med, xs[lo], xs[hi]


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def bootstrap_geomean(per_shape_samples, n_boot=2000, seed=0):
    """95 % interval of the geomean over shapes of per-shape medians, repeats resampled per shape."""
    rng = np.random.default_rng(seed)
    arrs = [np.log(np.asarray(s, dtype=float)) for s in per_shape_samples if len(s)]
    if not arrs:
        return None, None
    boots = np.zeros(n_boot)
    for a in arrs:
        idx = rng.integers(0, len(a), size=(n_boot, len(a)))
        boots += np.median(a[idx], axis=1)
    boots = np.exp(boots / len(arrs))
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def sustained_warmup(fn, seconds=3.0):
    b, s, h = 4, 8192, 16
    q, k, v = (torch.randn(b, s, h, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out = torch.empty_like(q)
    t0 = time.time()
    n = 0
    while time.time() - t0 < seconds:
        for _ in range(10):
            fn(q, k, v, False, 1 / math.sqrt(128), out)
        torch.cuda.synchronize()
        n += 10
    return n


def bench_shape(shape, fns, names, own, repeats, nsets, flush, seed, log):
    b, s, hq, hk, d, causal = shape
    scale = 1.0 / math.sqrt(d)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    sets = []
    for _ in range(nsets):
        q = torch.randn(b, s, hq, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        k = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        v = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        sets.append((q, k, v))
    idx = torch.randperm(s, generator=gen, device="cuda")[:CHECK_ROWS].sort().values
    refs = [reference_rows(q, k, v, causal, scale, idx) for q, k, v in sets]
    outs = {n: [torch.empty_like(sets[i][0]) for i in range(nsets)] for n in names if n in own}
    inputs = {n: sets for n in names}
    row = {"shape": label(shape), "batch": b, "seqlen": s, "heads_q": hq, "heads_kv": hk, "head_dim": d,
           "causal": causal, "flops": flops(shape), "kernels": {}, "errors": {}, "failed": {}}
    live = []

    def warm(n):
        for i in range(nsets):
            fns[n](*inputs[n][i], causal, scale, outs[n][i] if n in outs else None)
        for _ in range(2):
            fns[n](*inputs[n][0], causal, scale, outs[n][0] if n in outs else None)
        torch.cuda.synchronize()

    for n in names:  # compile and warm, one failing kernel does not stop the others
        try:
            try:
                warm(n)
            except Exception:
                if n != "cudnn" or hq == hk:
                    raise
                # cuDNN without native GQA: k/v expanded once per set, outside the timed call
                inputs[n] = [(q, k.repeat_interleave(hq // hk, dim=2), v.repeat_interleave(hq // hk, dim=2))
                             for q, k, v in sets]
                row["cudnn_gqa"] = "k/v expanded outside timing"
                warm(n)
            live.append(n)
        except Exception as exc:
            row["failed"][n] = f"{type(exc).__name__}: {exc}"[:300]
            log(f"  {n}: failed: {row['failed'][n]}")
            torch.cuda.synchronize()
    check_reps = {0, repeats // 2, repeats - 1}
    events = {n: [] for n in live}
    checks = {n: [] for n in live}
    rng = random.Random(seed)
    for rep in range(repeats):
        si = rep % nsets
        order = list(live)
        rng.shuffle(order)
        for n in order:
            out = outs[n][si] if n in outs else None
            if out is not None:
                out.fill_(float("nan"))
            flush.zero_()
            torch.cuda._sleep(200_000)  # ~100 us: the launch below is queued before `start` fires
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            res = fns[n](*inputs[n][si], causal, scale, out)
            end.record()
            events[n].append((start, end))
            if rep in check_reps:
                checks[n].append((si, res[:, idx].float()))
        if rep % 10 == 9:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    times = {n: [a.elapsed_time(e) for a, e in events[n]] for n in live}
    for n in live:
        errs = [rel_err(o, refs[si]) for si, o in checks[n]]
        row["errors"][n] = max(errs)
        med, lo, hi = median_ci(times[n])
        row["kernels"][n] = {"ms": med, "ms_ci95": [lo, hi], "tflops": flops(shape) / med / 1e9,
                             "ok": max(errs) < TOL}
    row["times_ms"] = {n: [round(t, 4) for t in times[n]] for n in live}
    return row


def ratios(row, num, den):
    """Per-repeat ratios den_time / num_time (> 1: `num` is faster)."""
    t = row["times_ms"]
    if num not in t or den not in t:
        return []
    return [b / a for a, b in zip(t[num], t[den])]


def write_json(report, path):
    """Indented JSON with every list of numbers on one line (the per-repeat times stay small)."""
    import re

    text = json.dumps(report, indent=1)
    text = re.sub(r"\[\s*([-0-9.eE+,\s]+?)\s*\]", lambda m: "[" + ",".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    with open(path, "w") as f:
        f.write(text + "\n")


def ncu_target(args):
    fns, notes = make_kernels([args.ncu], {}, args.kernel)
    b, s, hq, hk, causal = (int(x) for x in args.shape.split(","))
    q, k, v = (torch.randn(b, s, h, 128, device="cuda", dtype=torch.bfloat16) for h in (hq, hk, hk))
    out = torch.empty_like(q)
    for _ in range(3):  # ncu: --launch-skip 2 --launch-count 1 profiles the third
        fns[args.ncu](q, k, v, bool(causal), 1 / math.sqrt(128), out)
    torch.cuda.synchronize()
    print("ncu target done", args.ncu, args.shape, notes)


def versions():
    from importlib import metadata

    v = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    for dist in ("nvidia-cutlass-dsl", "flash-attn-4", "tokenspeed-fa3", "quack-kernels"):
        try:
            v[dist] = metadata.version(dist)
        except Exception:  # the device bundles carry no dist-info for FA3: FA3_VERSION says it
            v[dist] = os.environ.get("FA3_VERSION") if dist == "tokenspeed-fa3" else None
    try:
        import flash_attn_config  # noqa: F401  (FA3's build config, next to flash_attn_interface)

        v["fa3_module"] = os.path.dirname(flash_attn_config.__file__)
    except Exception:
        pass
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--kernels", default="ours,ours_again,fa3,cudnn,fa4")
    ap.add_argument("--kernel", default=KERNEL, help="our kernel file")
    ap.add_argument("--variants", default="{}", help='JSON {name: knob overrides} of our kernel, timed too')
    ap.add_argument("--variant-rows", default="noncausal", choices=["all", "noncausal"])
    ap.add_argument("--extra-rows", default="", help="b,s,hq,hk,causal;... rows beyond the grid (ours, variants, fa3)")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--sets", type=int, default=3)
    ap.add_argument("--rows", default="", help="only rows whose label contains one of these (comma list)")
    ap.add_argument("--ncu", default=None, help="run one kernel 3 times on --shape and exit (for ncu)")
    ap.add_argument("--shape", default="1,32768,16,16,0")
    args = ap.parse_args()
    if args.ncu:
        return ncu_target(args)

    t_start = time.time()
    log = lambda m: print(f"[{time.time() - t_start:6.1f}s] {m}", flush=True)  # noqa: E731
    variants = json.loads(args.variants)
    names = [n for n in args.kernels.split(",") if n]
    fns, notes = make_kernels(names, variants, args.kernel)
    for n, why in notes.items():
        log(f"{n} {why}")
    names = [n for n in names if n in fns]
    seed0 = int.from_bytes(os.urandom(4), "little")
    report = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
              "versions": versions(), "notes": notes, "seed": seed0, "repeats": args.repeats,
              "sets": args.sets, "variants": variants, "method": __doc__.split("Method", 1)[1].strip(),
              "rows": []}
    try:
        report["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu",
             "--format=csv"], capture_output=True, text=True, timeout=20).stdout
    except Exception:
        pass
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    warm = next((fns[n] for n in ("ours", "fa3") if n in fns), next(iter(fns.values())))
    log(f"sustained warm-up: {sustained_warmup(warm)} launches")
    shapes = paper_shapes()
    if args.rows:
        shapes = [sh for sh in shapes if any(r in label(sh) for r in args.rows.split(","))]
    extra = []
    for spec in filter(None, args.extra_rows.split(";")):
        b, s, hq, hk, c = (int(x) for x in spec.split(","))
        extra.append((b, s, hq, hk, 128, bool(c)))
    for i, shape in enumerate(shapes + extra):
        is_extra = i >= len(shapes)
        use = [n for n in names if not is_extra or n in ("ours", "ours_again", "fa3")]
        if variants and (args.variant_rows == "all" or not shape[5]):
            use += list(variants)
        own = {n for n in use if n.startswith("ours")} | set(variants)
        row = bench_shape(shape, fns, use, own, args.repeats, args.sets, flush, seed0 + i, log)
        row["extra"] = is_extra
        for other in [n for n in use if n != "ours"]:
            med, lo, hi = median_ci(ratios(row, "ours", other)) if ratios(row, "ours", other) else (None, None, None)
            row.setdefault("ours_vs", {})[other] = {"ratio": med, "ci95": [lo, hi]}
        if "fa3" in row["kernels"]:
            for vname in variants:
                r = ratios(row, vname, "fa3")
                if r:
                    med, lo, hi = median_ci(r)
                    row.setdefault("variant_vs_fa3", {})[vname] = {"ratio": med, "ci95": [lo, hi]}
            for vname in variants:
                r = ratios(row, vname, "ours")
                if r:
                    med, lo, hi = median_ci(r)
                    row.setdefault("variant_vs_ours", {})[vname] = {"ratio": med, "ci95": [lo, hi]}
        report["rows"].append(row)
        tf = " ".join(f"{n}={row['kernels'][n]['tflops']:.0f}" for n in row["kernels"])
        rs = " ".join(f"{n}={v['ratio']:.3f}" for n, v in row.get("ours_vs", {}).items() if v["ratio"])
        bad = [n for n, kv in row["kernels"].items() if not kv["ok"]]
        log(f"{row['shape']}: {tf} | ours vs {rs}" + (f" | WRONG: {bad}" if bad else ""))
        torch.cuda.empty_cache()

    grid = [r for r in report["rows"] if not r["extra"]]
    summ = {}
    for other in sorted({o for r in grid for o in r.get("ours_vs", {})}):
        have = [r for r in grid if r.get("ours_vs", {}).get(other, {}).get("ratio")]
        samples = [ratios(r, "ours", other) for r in have]
        lo, hi = bootstrap_geomean(samples)
        summ[f"ours_vs_{other}"] = {"geomean": geomean([r["ours_vs"][other]["ratio"] for r in have]),
                                   "ci95": [lo, hi], "rows": len(have),
                                   "min": min(r["ours_vs"][other]["ratio"] for r in have) if have else None}
    for n in sorted({n for r in grid for n in r["kernels"]}):
        summ[f"tflops_{n}"] = geomean([r["kernels"][n]["tflops"] for r in grid if n in r["kernels"]])
    summ["all_correct"] = all(kv["ok"] for r in report["rows"] for kv in r["kernels"].values())
    report["summary"] = summ
    report["wall_s"] = time.time() - t_start
    if args.json:
        write_json(report, args.json)

    cols = [n for n in names if n != "ours_again"] + list(variants)
    print("\n| shape | " + " | ".join(f"{n} TF/s" for n in cols) + " | ours/fa3 (95% CI) | ours/cudnn | ours/fa4 | ours/ours_again |")
    print("|---" * (len(cols) + 5) + "|")
    for r in report["rows"]:
        tf = " | ".join(f"{r['kernels'][n]['tflops']:.0f}" if n in r["kernels"] else "-" for n in cols)
        def rr(o):
            v = r.get("ours_vs", {}).get(o)
            return "-" if not v or v["ratio"] is None else f"{v['ratio']:.3f}"
        f3 = r.get("ours_vs", {}).get("fa3")
        f3s = "-" if not f3 or f3["ratio"] is None else f"{f3['ratio']:.3f} ({f3['ci95'][0]:.3f}-{f3['ci95'][1]:.3f})"
        print(f"| {r['shape']}{' (extra)' if r['extra'] else ''} | {tf} | {f3s} | {rr('cudnn')} | {rr('fa4')} | {rr('ours_again')} |")
    for k, v in summ.items():
        print(k, json.dumps(v))
    print(f"wall {report['wall_s']:.0f}s")


if __name__ == "__main__":
    main()
