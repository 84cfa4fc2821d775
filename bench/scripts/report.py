#!/usr/bin/env python3
"""Summarises a comparison's raw results: medians over rounds, with ratios
against a reference endpoint.

  report.py bench/results/redis_compare.csv [twemproxy]
      per endpoint, pipeline depth and test (columns round, endpoint,
      pipeline, test, metric, value)
  report.py bench/results/pg_compare.csv [pgbouncer]
      per endpoint, query protocol and test (columns round, endpoint, mode,
      test, metric, value)

Standard library only.
"""

import csv
import statistics
import sys
from collections import defaultdict


def main():
    path = sys.argv[1]
    with open(path) as f:
        columns = csv.DictReader(f).fieldnames or []
    if "mode" in columns:
        postgres(path, sys.argv[2] if len(sys.argv) > 2 else "pgbouncer")
    else:
        redis(path, sys.argv[2] if len(sys.argv) > 2 else "twemproxy")


def redis(path, reference):
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

    cpu = sorted(((k[1], k[2], k[0], v) for k, v in med.items() if k[3] == "cpu_us_per_cmd"),
                 key=lambda c: (int(c[0]), c[1], endpoints.index(c[2])))
    if cpu:
        print("\nCPU time of the endpoint's process per command (user+system, all threads,"
              " median over rounds)")
        for pipeline, test, ep, us in cpu:
            print(f"{ep:<10} -P {pipeline:<3} {test:<8} {us:8.2f} us/command")
    idle = [(ep, med[(ep, "-", "idle", "kib_per_conn")]) for ep in endpoints
            if (ep, "-", "idle", "kib_per_conn") in med]
    if idle:
        print("\nresident memory per idle connection (over the process' baseline)")
        for ep, kib in idle:
            print(f"{ep:<10} {kib:8.2f} KiB/connection")


def postgres(path, reference):
    values = defaultdict(list)
    endpoints = []
    with open(path) as f:
        for row in csv.DictReader(f):
            key = (row["endpoint"], row["mode"], row["test"], row["metric"])
            values[key].append(float(row["value"]))
            if row["endpoint"] not in endpoints:
                endpoints.append(row["endpoint"])
    med = {k: statistics.median(v) for k, v in values.items()}
    rounds = max((len(v) for k, v in values.items() if k[3] == "tps"), default=0)
    width = max([len(e) for e in endpoints] + [8])

    def cell(value, fmt, size):
        return f"{value:>{size}{fmt}}" if value is not None else f"{'-':>{size}}"

    def table(test, title, extra):
        runs = sorted({k[1] for k in med if k[2] == test and k[3] == "tps"},
                      key=lambda m: ["simple", "extended", "prepared"].index(m)
                      if m in ("simple", "extended", "prepared") else 9)
        if not runs:
            return
        print(f"\n{title}: median of {rounds} rounds")
        head = f"{'endpoint':<{width}} {'mode':<8} {'tps':>9} {'vs ' + reference:>13} {'lat ms':>7}"
        if extra:
            head += f" {'conn ms':>7}"
        head += f" {'proxy us/tx':>11} {'store us/tx':>11} {'total us/tx':>11}"
        print(head)
        for mode in runs:
            ref = med.get((reference, mode, test, "tps"))
            for ep in endpoints:
                get = lambda metric: med.get((ep, mode, test, metric))
                tps = get("tps")
                if tps is None:
                    continue
                ratio = f"{tps / ref:.2f}x" if ref else "-"
                proxy, store = get("cpu_us_per_tx"), get("store_cpu_us_per_tx")
                total = None if store is None else store + (proxy or 0.0)
                line = f"{ep:<{width}} {mode:<8} {tps:>9.0f} {ratio:>13} {cell(get('latency_ms'), '.3f', 7)}"
                if extra:
                    line += f" {cell(get('connect_ms'), '.3f', 7)}"
                line += f" {cell(proxy, '.1f', 11)} {cell(store, '.1f', 11)} {cell(total, '.1f', 11)}"
                print(line)

    table("select", "select-only, persistent connections (pgbench -S)", False)
    table("churn", "connection churn, a new connection per transaction (pgbench -S -C)", True)
    print("\nCPU per transaction in microseconds (user+system): proxy = the endpoint's process,")
    print("store = postmaster and backends; total = both (pgbench's own CPU is not counted).")


if __name__ == "__main__":
    main()
