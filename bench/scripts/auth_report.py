#!/usr/bin/env python3
"""Summarises bench/auth_compare.sh's raw results (columns round, test,
endpoint, metric, value): medians over rounds per test and endpoint, custos
against direct, and the price of a signature check (custos-cold against
custos in the auth-loop test).

  auth_report.py bench/results/auth_compare.csv

Standard library only.
"""

import csv
import statistics
import sys
from collections import defaultdict

TESTS = ["redis-benchmark", "pgbench", "auth-loop"]
ENDPOINTS = ["direct", "custos", "custos-cold"]
CPU = ["custos_cpu_us_per_conn", "store_cpu_us_per_conn", "client_cpu_us_per_conn"]


def main():
    values = defaultdict(list)  # (test, endpoint, metric) -> [value]
    by_round = defaultdict(dict)  # (test, endpoint, metric) -> {round: value}
    with open(sys.argv[1]) as f:
        for row in csv.DictReader(f):
            key = (row["test"], row["endpoint"], row["metric"])
            values[key].append(float(row["value"]))
            by_round[key][row["round"]] = float(row["value"])
    med = {k: statistics.median(v) for k, v in values.items()}
    rounds = max((len(v) for k, v in values.items() if k[2] == "conn_per_s"), default=0)
    tests = [t for t in TESTS if any(k[0] == t for k in med)]

    def get(test, ep, metric):
        return med.get((test, ep, metric))

    def cell(value, fmt, size):
        return f"{value:>{size}{fmt}}" if value is not None else f"{'-':>{size}}"

    print(f"\nconnection churn: median of {rounds} rounds")
    print(f"{'test':<16}{'endpoint':<12}{'conn/s':>8}{'vs direct':>10}{'lat ms':>8}{'conn ms':>8}"
          f"{'custos us':>10}{'store us':>9}{'client us':>10}{'total us':>9}{'store conn':>11}")
    for test in tests:
        ref = get(test, "direct", "conn_per_s")
        for ep in ENDPOINTS:
            rate = get(test, ep, "conn_per_s")
            if rate is None:
                continue
            ratio = f"{rate / ref:.2f}x" if ref else "-"
            cpu = [get(test, ep, m) for m in CPU]
            total = sum(c for c in cpu if c is not None)
            print(f"{test:<16}{ep:<12}{rate:>8.0f}{ratio:>10}"
                  f"{cell(get(test, ep, 'latency_ms'), '.3f', 8)}{cell(get(test, ep, 'connect_ms'), '.3f', 8)}"
                  f"{cell(cpu[0], '.1f', 10)}{cell(cpu[1], '.1f', 9)}{cell(cpu[2], '.1f', 10)}"
                  f"{total:>9.1f}{cell(get(test, ep, 'store_conns_per_conn'), '.2f', 11)}")

    print("\ncustos against direct (medians; per-round ratios of the same round's runs in brackets)")
    for test in tests:
        for ep in ("custos", "custos-cold"):
            rate, ref = get(test, ep, "conn_per_s"), get(test, "direct", "conn_per_s")
            if rate is None or not ref:
                continue
            a = by_round[(test, ep, "conn_per_s")]
            b = by_round[(test, "direct", "conn_per_s")]
            ratios = sorted(a[r] / b[r] for r in a if r in b and b[r])
            spread = f" [{ratios[0]:.2f}-{ratios[-1]:.2f}]" if ratios else ""
            custos = get(test, ep, "custos_cpu_us_per_conn") or 0.0
            store = get(test, ep, "store_cpu_us_per_conn") or 0.0
            store_direct = get(test, "direct", "store_cpu_us_per_conn") or 0.0
            client = get(test, ep, "client_cpu_us_per_conn") or 0.0
            client_direct = get(test, "direct", "client_cpu_us_per_conn") or 0.0
            print(f"  {test} {ep}: {rate / ref:.2f}x the connections/s{spread};"
                  f" CPU per connection: custos {custos:.1f} us + store {store:.1f} us + client {client:.1f} us"
                  f" = {custos + store + client:.1f} us, directly store {store_direct:.1f} us"
                  f" + client {client_direct:.1f} us = {store_direct + client_direct:.1f} us")

    cold, warm = get("auth-loop", "custos-cold", "custos_cpu_us_per_conn"), get(
        "auth-loop", "custos", "custos_cpu_us_per_conn")
    if cold is not None and warm is not None:
        rc, rw = get("auth-loop", "custos-cold", "conn_per_s"), get("auth-loop", "custos", "conn_per_s")
        print(f"\nsignature check (auth-loop, custos-cold against custos): {cold - warm:+.1f} us of custos CPU"
              f" per connection ({warm:.1f} -> {cold:.1f} us), {rc / rw:.2f}x the connections/s")

    if get("redis-benchmark", "direct", "conn_per_s_inline") is not None:
        print("\nredis-benchmark per test (median conn/s, p50 ms):", end="")
        for ep in ENDPOINTS:
            parts = []
            for t in ("inline", "mbulk"):
                rate, p50 = get("redis-benchmark", ep, f"conn_per_s_{t}"), get("redis-benchmark", ep, f"p50_ms_{t}")
                if rate is not None:
                    parts.append(f"PING_{t.upper()} {rate:.0f} ({p50:.3f})")
            if parts:
                print(f"\n  {ep:<12}" + ", ".join(parts), end="")
        print()


if __name__ == "__main__":
    main()
