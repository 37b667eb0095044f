#!/usr/bin/env python3
"""Print criterion results next to the baseline measured in the same run, with their ratio.

Usage: tools/bench-ratios.py [TARGET_DIR [STATISTIC]]   (defaults: target, mean)

STATISTIC is one of criterion's estimates: mean, median or slope. On a noisy machine the
median is the least moved by interruptions.

In every benchmark group, a benchmark whose function name contains "baseline" is the baseline
of the other benchmarks of that group with the same parameter (e.g. `chain/<function>/64` is
compared with `chain/baseline_.../64`; a group without parameters, like `dh_turn`, has one
baseline). "ratio" is the time over the baseline's (lower is better); "throughput" is its
inverse, the fraction of the baseline's throughput. Output is a Markdown table ready for
BENCHMARKS.md.
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target") / "criterion"
stat = sys.argv[2] if len(sys.argv) > 2 else "mean"
rows = []
for est in sorted(root.glob("**/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    t = (json.loads(est.read_text()).get(stat) or {}).get("point_estimate")
    if t is None:
        sys.exit(f"{est}: no {stat} estimate")
    thr = bench.get("throughput") or {}
    rows.append((bench["group_id"], bench.get("function_id") or "", bench.get("value_str") or "", t, thr))

def fmt_time(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            return f"{ns / div:.3g} {unit}"
    return f"{ns:.3g} ns"

print(f"| group | benchmark | {stat} | baseline ({stat}) | ratio | throughput |")
print("|---|---|---|---|---|---|")
for group, func, value, t, _ in rows:
    if "baseline" in func:
        continue
    name = "/".join(x for x in (func, value) if x)
    base = [r for r in rows if r[0] == group and "baseline" in r[1] and r[2] == value]
    if base:
        b = base[0][3]
        print(f"| {group} | {name} | {fmt_time(t)} | {fmt_time(b)} | {t / b:.3f}× | {b / t:.3f}× |")
    else:
        print(f"| {group} | {name} | {fmt_time(t)} | – | – | – |")
