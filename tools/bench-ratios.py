#!/usr/bin/env python3
"""Print criterion results next to the baseline measured in the same run, with their ratio.

Usage: tools/bench-ratios.py [TARGET_DIR]   (default: target)

For every benchmark group, each benchmark whose name contains "baseline" is the baseline of
the benchmarks that share its prefix (everything before the last "/"). Output is a Markdown
table ready for BENCHMARKS.md.
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target") / "criterion"
rows = []
for est in sorted(root.glob("**/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    mean = json.loads(est.read_text())["mean"]["point_estimate"]
    thr = bench.get("throughput") or {}
    rows.append((bench["group_id"], bench.get("function_id") or "", bench.get("value_str") or "", mean, thr))

def fmt_time(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            return f"{ns / div:.3g} {unit}"
    return f"{ns:.3g} ns"

print("| group | benchmark | mean | baseline | ratio |")
print("|---|---|---|---|---|")
for group, func, value, mean, _ in rows:
    name = "/".join(x for x in (func, value) if x)
    if "baseline" in name:
        continue
    prefix = name.rsplit("/", 1)[0] if "/" in name else ""
    base = [r for r in rows if r[0] == group and "baseline" in "/".join(x for x in (r[1], r[2]) if x)
            and "/".join(x for x in (r[1], r[2]) if x).rsplit("/", 1)[0] == prefix]
    if base:
        b = base[0][3]
        print(f"| {group} | {name} | {fmt_time(mean)} | {fmt_time(b)} | {mean / b:.3f}× |")
    else:
        print(f"| {group} | {name} | {fmt_time(mean)} | – | – |")
