#!/usr/bin/env python3
"""Summarises bench/results/redis_compare.csv: medians over rounds per
endpoint, pipeline depth and test, with ratios against a reference endpoint.

Standard library only.
"""

import csv
import statistics
import sys
from collections import defaultdict


def main():
    path = sys.argv[1]
    reference = sys.argv[2] if len(sys.argv) > 2 else "twemproxy"
    values = defaultdict(list)
    endpoints = []
    with open(path) as f:
        for row in csv.DictReader(f):
            key = (row["endpoint"], row["pipeline"], row["test"], row["metric"])
            values[key].append(float(row["value"]))
            if row["endpoint"] not in endpoints:
                endpoints.append(row["endpoint"])
    med = {k: statistics.median(v) for k, v in values.items()}
    rounds = max((len(v) for v in values.values()), default=0)

    print(f"\nthroughput: median of {rounds} rounds (requests/s; p50 and p99 latency in ms)")
    print(f"{'endpoint':<10} {'P':>3} {'test':<4} {'req/s':>10} {'vs ' + reference:>14} {'p50':>7} {'p99':>7}")
    tests = sorted({(k[1], k[2]) for k in med if k[3] == "rps"}, key=lambda t: (int(t[0]), t[1]))
    for pipeline, test in tests:
        ref = med.get((reference, pipeline, test, "rps"))
        for ep in endpoints:
            rps = med.get((ep, pipeline, test, "rps"))
            if rps is None:
                continue
            ratio = f"{rps / ref:.2f}x" if ref else "-"
            p50 = med.get((ep, pipeline, test, "p50_ms"), float("nan"))
            p99 = med.get((ep, pipeline, test, "p99_ms"), float("nan"))
            print(f"{ep:<10} {pipeline:>3} {test:<4} {rps:>10.0f} {ratio:>14} {p50:>7.3f} {p99:>7.3f}")

    cpu = [(ep, med[(ep, "1", "GET+SET", "cpu_us_per_cmd")]) for ep in endpoints
           if (ep, "1", "GET+SET", "cpu_us_per_cmd") in med]
    if cpu:
        print("\nCPU time per command at -P 1 (user+system, median over rounds)")
        for ep, us in cpu:
            print(f"{ep:<10} {us:8.2f} us/command")
    idle = [(ep, med[(ep, "-", "idle", "kib_per_conn")]) for ep in endpoints
            if (ep, "-", "idle", "kib_per_conn") in med]
    if idle:
        print("\nresident memory per idle connection (over the process' baseline)")
        for ep, kib in idle:
            print(f"{ep:<10} {kib:8.2f} KiB/connection")


if __name__ == "__main__":
    main()
