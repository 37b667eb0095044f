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

Usage: tools/bench-ratios.py --network RUN [AFTER_RUN]

Reads the JSON lines the network bench (`cargo bench -p dp2ptcs-node --bench network`) prints,
from files holding its output (other lines are skipped). With one run: for each payload and
concurrency, raw quinn's messages per second and each node system's, with its ratio to the raw
quinn of the same run and its p50 / p99 latency. With two runs (say, before and after a change,
back to back): each figure as "before → after", the gain, and each run's ratio to its own raw
quinn.
"""
import json
import pathlib
import sys


def network_rows(path):
    """{(payload, concurrency, system): row} of the network bench's message rows in `path`."""
    rows = {}
    try:
        text = pathlib.Path(path).read_text()
    except OSError as e:
        sys.exit(f"{path}: {e.strerror}")
    for n, line in enumerate(text.splitlines(), 1):
        if not line.startswith('{"bench":"network"'):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            sys.exit(f"{path}:{n}: not a JSON line: {e}")
        if row.get("kind") == "messages":
            rows[(row["payload_bytes"], row["concurrency"], row["system"])] = row
    if not rows:
        sys.exit(f"{path}: no network bench results (lines starting with {{\"bench\":\"network\")")
    return rows


def payload_name(n):
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def network_table(paths):
    runs = [network_rows(p) for p in paths]
    systems = sorted({k[2] for run in runs for k in run if k[2] != "raw"})
    points = sorted({k[:2] for run in runs for k in run if k[2] == "raw"})
    if len(runs) == 1:
        (run,) = runs
        head = ["payload", "conc", "raw msgs/s"]
        for sys_ in systems:
            head += [f"{sys_} msgs/s", f"{sys_}/raw", f"{sys_} p50 / p99 ms"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for p, c in points:
            raw = run[(p, c, "raw")]["msgs_per_sec"]
            cells = [payload_name(p), str(c), f"{raw:,.0f}"]
            for sys_ in systems:
                r = run.get((p, c, sys_))
                if r is None:
                    cells += ["–"] * 3
                    continue
                cells += [f"{r['msgs_per_sec']:,.0f}", f"{r['msgs_per_sec'] / raw:.3f}×",
                          f"{r['p50_ms']:.2f} / {r['p99_ms']:.1f}"]
            print("| " + " | ".join(cells) + " |")
        return
    before, after = runs
    head = ["payload", "conc", "raw msgs/s before / after"]
    for sys_ in systems:
        head += [f"{sys_} msgs/s: before → after", f"{sys_}/raw: before → after",
                 f"{sys_} p50 / p99 ms: before → after"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for p, c in points:
        if (p, c, "raw") not in before or (p, c, "raw") not in after:
            continue
        ra, rb = before[(p, c, "raw")]["msgs_per_sec"], after[(p, c, "raw")]["msgs_per_sec"]
        cells = [payload_name(p), str(c), f"{ra:,.0f} / {rb:,.0f}"]
        for sys_ in systems:
            a, b = before.get((p, c, sys_)), after.get((p, c, sys_))
            if a is None or b is None:
                cells += ["–"] * 3
                continue
            x, y = a["msgs_per_sec"], b["msgs_per_sec"]
            cells += [f"{x:,.0f} → {y:,.0f} ({y / x:.2f}×)", f"{x / ra:.3f}× → {y / rb:.3f}×",
                      f"{a['p50_ms']:.2f} / {a['p99_ms']:.1f} → {b['p50_ms']:.2f} / {b['p99_ms']:.1f}"]
        print("| " + " | ".join(cells) + " |")


if len(sys.argv) > 1 and sys.argv[1] == "--network":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: tools/bench-ratios.py --network RUN [AFTER_RUN]")
    network_table(sys.argv[2:])
    sys.exit(0)

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
