#!/usr/bin/env python3
"""Plots the scaling series from scripts/bench.sh (CSV=FILE) into a PNG:
seconds per step against record count, log-log, with the per-record cost noted.
   usage: scripts/plot-bench.py bench.csv docs/performance.png   (needs matplotlib)"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = list(csv.DictReader(open(sys.argv[1])))
series = defaultdict(list)
for r in rows:
    series[r["step"]].append((int(r["n"]), max(float(r["seconds"]), 0.005)))
fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
for step, pts in sorted(series.items()):
    pts.sort()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=step)
ns = sorted({int(r["n"]) for r in rows})
ax.plot(ns, [n / 50_000 for n in ns], linestyle=":", color="grey", label="50,000 records/s")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("records (one product per machine)")
ax.set_ylabel("seconds (release build, 2 cores)")
ax.set_title("makproxy: time per step against batch size")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[2])
print("wrote", sys.argv[2])
