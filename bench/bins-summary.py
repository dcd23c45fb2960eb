#!/usr/bin/env python3
"""Medians per case of bench/compare-bins.sh results, and new/old ratios.

Each case has one figure, as in BENCHMARKS.md: broadcast CPU seconds per 1M
deliveries (lower is better), perobject delivered/s (higher), storm
connects/s (higher), idle KB per connection (lower), rate20 p99 latency
(lower). A ratio is "how much worse": new/old for lower-is-better figures,
old/new for higher-is-better ones, so above 1.05 is a regression of more
than 5 %.
"""
import json, statistics, sys

FIG = {
    "broadcast": ("CPU s per 1M delivered", lambda r: r["server"]["cpu_s_per_1m_delivered"], False),
    "perobject": ("delivered/s", lambda r: r["delivered_per_s"], True),
    "storm": ("connects/s", lambda r: r["setup"]["connects_per_s"], True),
    "idle": ("KB per connection", lambda r: r["idle"]["kb_per_conn"], False),
    "rate20": ("p99 latency us", lambda r: r["lat_us"]["p99"], False),
}
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    case, tag = r["label"].split()
    bad = r.get("lost", 0) + r.get("dup", 0) + r.get("unexpected", 0)
    runs.setdefault(case, {}).setdefault(tag, []).append((FIG[case][1](r), bad))
print(f"{'case':10} {'figure':24} {'old median [runs]':34} {'new median [runs]':34} worse-by")
for case, (name, _, higher) in FIG.items():
    if case not in runs:
        continue
    o = [v for v, _ in runs[case].get("old", [])]
    n = [v for v, _ in runs[case].get("new", [])]
    if not o or not n:
        continue
    mo, mn = statistics.median(o), statistics.median(n)
    worse = mo / mn if higher else mn / mo
    fmt = lambda xs: " ".join(f"{x:.4g}" for x in xs)
    bad = sum(b for _, b in runs[case].get("new", []))
    print(f"{case:10} {name:24} {mo:<10.4g} [{fmt(o)}]".ljust(70) + f"{mn:<10.4g} [{fmt(n)}]".ljust(35) + f" {worse:.3f}" + (f"  (new: {bad} lost/dup/unexpected)" if bad else ""))
