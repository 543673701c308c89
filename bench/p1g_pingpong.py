"""P1-g candidate 1 on the H200: FlashAttention-3's pingpong (`pingpong_d128="fa3"`) against the
shipped kernel (pingpong off) and our own pingpong (`pingpong_d128=True`), interleaved.

  source .device-carry/activate.sh && python3 bench/p1g_pingpong.py --json $OUT/p1g_pingpong.json
  # with FA3 timed too (its bundle, as bench/p1g_device.sh B):
  source .device-carry-fa3/activate.sh && python3 bench/p1g_pingpong.py --fa3 --json $OUT/p1g_pingpong.json
  python3 bench/p1g_pingpong.py --quick ...   # fewer correctness configurations, 30 repeats

Two parts, one process:
  1. correctness: small and tail shapes (GQA 4:1, d64 with its 3-warpgroup pingpong, seqlen 1, 63,
     257, 1000, ...) x causal or not x each mode, plus the "fa3" mode with overlap off and without
     the persistent / dynamic schedulers; full fp32 reference (bench/sm90_dev.py), output poisoned
     with NaN before each launch, two launches per configuration (the scheduler counter must come
     back to zero). The modes change the schedule only, not the arithmetic, so each "fa3" output is
     also compared bit for bit with the output of the same knobs with pingpong off.
  2. timing with bench/paper_h200.py's harness (`bench_shape`): random input sets rotated per
     repeat, L2 flushed before every call, a GPU spin so the launch is queued before the start
     event, CUDA events, every kernel once per repeat in a shuffled order, a sustained warm-up;
     per row the median time per kernel and, per variant, the median over repeats of the per-repeat
     ratio off_time / variant_time (> 1: the variant is faster) with its 95 % order-statistics
     interval; outputs of the timed calls (NaN-poisoned) checked on sampled rows against fp32.
     Rows: the paper grid's causal MHA rows (b8 s4096 ... b1 s32768, 16 heads, d128) and its
     non-causal MHA rows at s16384 and s32768 (`--rows` to change).
Writes one JSON (`--json`) and prints a table.
"""

import argparse
import importlib.util
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KERNEL = os.path.join(ROOT, "kernels", "cute_dsl", "sm90", "fmha_fwd.py")

# name -> knob overrides of the variants timed against the shipped kernel ("ours")
VARIANTS = {"fa3pp": {"pingpong_d128": "fa3"}, "pp": {"pingpong_d128": True}}
CAUSAL_ROWS = "b8 s4096 h16/16 causal,b4 s8192 h16/16 causal,b2 s16384 h16/16 causal,b1 s32768 h16/16 causal"
NONCAUSAL_ROWS = "b2 s16384 h16/16 non-causal,b1 s32768 h16/16 non-causal"

# (batch, seqlen, heads_q, heads_kv, head_dim)
CHECK_SHAPES = [
    (1, 1, 2, 2, 128), (3, 63, 4, 4, 128), (2, 257, 8, 2, 128), (1, 1024, 16, 16, 128),
    (2, 2048, 16, 16, 128), (1, 4096, 32, 8, 128), (1, 8192, 8, 8, 128),
    (2, 257, 4, 1, 64), (1, 1000, 4, 4, 64), (1, 2048, 32, 32, 64), (1, 4096, 8, 8, 64),
]
QUICK_SHAPES = [(3, 63, 4, 4, 128), (2, 257, 8, 2, 128), (2, 2048, 16, 16, 128), (1, 2048, 32, 32, 64)]


def check_sets(head_dim, quick, causal=None):
    """(name, knob overrides, the same knobs with pingpong off or None) to check at this head dim
    (with `causal` given, only those whose knobs act on that path)."""
    pp = f"pingpong_d{head_dim}"
    sets = [("off", {pp: False}, None), ("pp", {pp: True}, None), ("fa3pp", {pp: "fa3"}, {pp: False})]
    if not quick:
        sets += [
            ("fa3pp_no_overlap", {pp: "fa3", "intra_wg_overlap": False}, {pp: False, "intra_wg_overlap": False}),
            ("fa3pp_static_causal", {pp: "fa3", "persistent_causal": False}, {pp: False, "persistent_causal": False}),
            ("fa3pp_not_persistent", {pp: "fa3", "persistent": False}, {pp: False, "persistent": False}),
        ]
    if causal is not None:  # `persistent` acts on non-causal launches only, `persistent_causal` on causal ones
        sets = [x for x in sets if not ("persistent" in x[1] if causal else "persistent_causal" in x[1])]
    if head_dim == 64:  # keep the 192-row (3-warpgroup) tiles where the work model would pick 128
        sets = [(n, dict(k, tiles_by_cost_d64=False), None if o is None else dict(o, tiles_by_cost_d64=False))
                for n, k, o in sets]
    return sets


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def correctness(mod, dev, shapes, quick, log):
    """Every check configuration on every shape, causal or not; rows of results."""
    import torch

    rows = []
    for b, s, hq, hk, d in shapes:
        gen = torch.Generator(device="cuda").manual_seed(1000 * s + 10 * hq + hk + d)
        q = torch.randn(b, s, hq, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        k = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        v = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        scale = 1.0 / math.sqrt(d)
        for causal in (False, True):
            ref = dev.reference(q, k, v, causal, scale)
            outs = {}
            for name, over, off_over in check_sets(d, quick, causal):
                knobs = dict(mod.KNOBS, **over)
                row = {"shape": [b, s, hq, hk, d], "causal": causal, "config": name, "knobs": over}
                try:
                    errs = []
                    for _ in range(2):
                        out = torch.full_like(q, float("nan"))
                        mod.attention(q, k, v, causal=causal, softmax_scale=scale, out=out, knobs=knobs)
                        torch.cuda.synchronize()
                        errs.append(dev.rel_err(out, ref))
                    outs[json.dumps(over, sort_keys=True)] = out
                    row["rel_err"] = max(errs)
                    row["ok"] = row["rel_err"] < dev.TOL
                    if off_over is not None:
                        base = outs.get(json.dumps(off_over, sort_keys=True))
                        if base is None:
                            base = torch.full_like(q, float("nan"))
                            mod.attention(q, k, v, causal=causal, softmax_scale=scale, out=base,
                                          knobs=dict(mod.KNOBS, **off_over))
                            torch.cuda.synchronize()
                        row["bitwise_equal_to_off"] = bool(torch.equal(out, base))
                except Exception as exc:
                    row["ok"] = False
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                rows.append(row)
                if not row["ok"] or row.get("bitwise_equal_to_off") is False:
                    log(f"  check {row}")
        log(f"checked b{b} s{s} h{hq}/{hk} d{d}: {sum(r['ok'] for r in rows)}/{len(rows)} ok so far")
    return rows


def add_ratios(paper, row, use, variants):
    """Per row: every kernel against the shipped one (vs_ours: ours_time / its time per repeat,
    median and 95 % interval; > 1: it is faster) and, with FA3 timed, ours and the variants
    against FA3 (vs_fa3: fa3_time / its time)."""
    for other in [n for n in use if n != "ours"]:
        r = paper.ratios(row, other, "ours")
        if r:
            med, lo, hi = paper.median_ci(r)
            row.setdefault("vs_ours", {})[other] = {"ratio": med, "ci95": [lo, hi]}
    if "fa3" in row["kernels"]:
        for other in ["ours"] + list(variants):
            r = paper.ratios(row, other, "fa3")
            if r:
                med, lo, hi = paper.median_ci(r)
                row.setdefault("vs_fa3", {})[other] = {"ratio": med, "ci95": [lo, hi]}


def summarize(paper, report, names, variants):
    """Geomeans of the per-row ratios (causal, non-causal, all), into report["summary"]; prints the table."""
    summ = {}
    for part, pick in (("causal", lambda r: r["causal"]), ("noncausal", lambda r: not r["causal"]),
                       ("all", lambda r: True)):
        rows = [r for r in report["rows"] if pick(r)]
        for other in sorted({o for r in rows for o in r.get("vs_ours", {})}):
            have = [r for r in rows if other in r.get("vs_ours", {})]
            lo, hi = paper.bootstrap_geomean([paper.ratios(r, other, "ours") for r in have])
            summ[f"{part}_{other}_vs_ours"] = {
                "geomean": paper.geomean([r["vs_ours"][other]["ratio"] for r in have]), "ci95": [lo, hi],
                "min": min(r["vs_ours"][other]["ratio"] for r in have), "rows": len(have)}
        for other in sorted({o for r in rows for o in r.get("vs_fa3", {})}):
            have = [r for r in rows if other in r.get("vs_fa3", {})]
            summ[f"{part}_{other}_vs_fa3"] = {
                "geomean": paper.geomean([r["vs_fa3"][other]["ratio"] for r in have]), "rows": len(have)}
    summ["all_timed_outputs_correct"] = all(kv["ok"] for r in report["rows"] for kv in r["kernels"].values())
    report["summary"] = summ

    cols = [n for n in names if n != "ours_again"] + list(variants)
    others = [n for n in names + list(variants) if n != "ours"]
    print("\n| shape | " + " | ".join(f"{n} TF/s" for n in cols) + " | "
          + " | ".join(f"{n} x ours (95% CI)" for n in others) + " |")
    print("|---" * (1 + len(cols) + len(others)) + "|")
    for r in report["rows"]:
        tf = " | ".join(f"{r['kernels'][n]['tflops']:.0f}" if n in r["kernels"] else "-" for n in cols)
        xs = []
        for n in others:
            v = r.get("vs_ours", {}).get(n)
            xs.append("-" if not v else f"{v['ratio']:.4f} ({v['ci95'][0]:.4f}-{v['ci95'][1]:.4f})")
        print(f"| {r['shape']} | {tf} | " + " | ".join(xs) + " |")
    if any("vs_fa3" in r for r in report["rows"]):
        print("\n| shape | " + " | ".join(f"{n} x fa3" for n in ["ours"] + list(variants)) + " |")
        print("|---" * (2 + len(variants)) + "|")
        for r in report["rows"]:
            xs = [f"{r['vs_fa3'][n]['ratio']:.4f}" if n in r.get("vs_fa3", {}) else "-" for n in ["ours"] + list(variants)]
            print(f"| {r['shape']} | " + " | ".join(xs) + " |")
    for key, val in summ.items():
        print(key, json.dumps(val))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None, help="write the report here (e.g. $OUT/p1g_pingpong.json)")
    ap.add_argument("--kernel", default=KERNEL, help="our kernel file")
    ap.add_argument("--variants", default=json.dumps(VARIANTS),
                    help="JSON {name: knob overrides} timed against the shipped knobs (default: %(default)s)")
    ap.add_argument("--rows", default=CAUSAL_ROWS + "," + NONCAUSAL_ROWS,
                    help="paper-grid rows to time, by label (comma list; default: the causal MHA rows and two non-causal)")
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--sets", type=int, default=3, help="input sets per row, rotated per repeat")
    ap.add_argument("--fa3", action="store_true", help="time FlashAttention-3 too (needs flash_attn_interface)")
    ap.add_argument("--no-ours-again", action="store_true", help="skip the second timing of the shipped kernel (noise floor)")
    ap.add_argument("--quick", action="store_true", help="fewer correctness shapes and configurations, 30 repeats")
    ap.add_argument("--skip-check", action="store_true", help="timing only")
    ap.add_argument("--skip-bench", action="store_true", help="correctness only")
    args = ap.parse_args()
    if args.quick and args.repeats == 60:
        args.repeats = 30
    variants = json.loads(args.variants)

    import torch

    sys.path.insert(0, HERE)
    paper = _load("paper_h200_for_p1g", os.path.join(HERE, "paper_h200.py"))
    dev = _load("sm90_dev_for_p1g", os.path.join(HERE, "sm90_dev.py"))

    t_start = time.time()
    log = lambda m: print(f"[{time.time() - t_start:6.1f}s] {m}", flush=True)  # noqa: E731
    names = ["ours"] + ([] if args.no_ours_again else ["ours_again"]) + (["fa3"] if args.fa3 else [])
    mod = paper.load_ours(args.kernel)
    paper.load_ours = lambda path=None: mod  # one module instance: checks and timing share its compile cache
    fns, notes = paper.make_kernels(names, variants, args.kernel)
    for n, why in notes.items():
        log(f"{n} {why}")
    names = [n for n in names if n in fns]
    seed0 = int.from_bytes(os.urandom(4), "little")
    report = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
              "versions": paper.versions(), "notes": notes, "seed": seed0, "repeats": args.repeats,
              "sets": args.sets, "variants": variants, "knobs": mod.KNOBS, "method": __doc__}

    if not args.skip_check:
        rows = correctness(mod, dev, QUICK_SHAPES if args.quick else CHECK_SHAPES, args.quick, log)
        report["checks"] = rows
        report["checks_ok"] = all(r["ok"] for r in rows)
        report["checks_bitwise_equal"] = all(r.get("bitwise_equal_to_off", True) for r in rows)
        log(f"correctness: {sum(r['ok'] for r in rows)}/{len(rows)} ok, "
            f"fa3 outputs bitwise equal to pingpong off: {report['checks_bitwise_equal']}")

    if not args.skip_bench:
        flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
        log(f"sustained warm-up: {paper.sustained_warmup(fns['ours'])} launches")
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        shapes = [sh for sh in paper.paper_shapes() if paper.label(sh) in wanted]
        report["rows"] = []
        for i, shape in enumerate(shapes):
            use = names + list(variants)
            own = {n for n in use if n.startswith("ours")} | set(variants)
            row = paper.bench_shape(shape, fns, use, own, args.repeats, args.sets, flush, seed0 + i, log)
            add_ratios(paper, row, use, variants)
            report["rows"].append(row)
            tf = " ".join(f"{n}={row['kernels'][n]['tflops']:.0f}" for n in row["kernels"])
            rs = " ".join(f"{n}={v['ratio']:.4f}" for n, v in row.get("vs_ours", {}).items())
            bad = [n for n, kv in row["kernels"].items() if not kv["ok"]]
            log(f"{row['shape']}: {tf} | x ours: {rs}" + (f" | WRONG: {bad}" if bad else ""))
            torch.cuda.empty_cache()

        summarize(paper, report, names, variants)

    report["wall_s"] = time.time() - t_start
    if args.json:
        paper.write_json(report, args.json)
        log(f"wrote {args.json}")
    print(f"wall {report['wall_s']:.0f}s")
    ok = report.get("checks_ok", True) and report.get("summary", {}).get("all_timed_outputs_correct", True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
