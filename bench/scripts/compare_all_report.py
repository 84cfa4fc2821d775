#!/usr/bin/env python3
"""Turns the `custos-loadtest compare` reports of one bench/compare_all.sh
run into its CSV (one row per test and endpoint) and bench/RESULTS.md
(machine, date, versions, commands, the table).

  compare_all_report.py --stamp STAMP --results DIR --csv FILE --summary FILE
      --machine TEXT --load TEXT --features TEXT [--note TEXT]
      --versions FILE --commands FILE --settings TEXT

Reads DIR/compare_all-STAMP-PROTOCOL-TEST.json. Standard library only.
"""

import argparse
import csv
import glob
import json
import os
import re
import sys
from datetime import datetime, timezone

COLUMNS = [
    "protocol", "test", "workload", "endpoint", "target", "rounds", "connections",
    "pipeline", "ops_per_s", "ops_per_s_ratio", "p50_us", "p90_us", "p99_us",
    "p999_us", "max_us", "p99_ratio", "errors",
]


NOTES = """
## Reading the table

- Every endpoint serves the same store; direct is the store alone, so a
  proxy's ratio shows what it costs (or, for pooling proxies, saves).
- churn (Redis): twemproxy answers `AUTH` and `PING` itself, without the
  store, so its churn figure is a connection to twemproxy only.
- churn (PostgreSQL): PgBouncer keeps its store connections open, so no
  backend starts per client connection; direct and custos start one each
  time (custos also answers the client itself in development mode, while
  the client's SCRAM proof is computed by the load generator for direct
  and PgBouncer).
- On a 2-core machine the store, the proxy and the load generator share
  the cores: figures are only comparable within one run, and runs on a
  busy machine (see the load average) are noisy, with p99 and above
  dominated by scheduling delays.
"""


def load(results, stamp):
    pattern = re.compile(r"compare_all-" + re.escape(stamp) + r"-(redis|postgres)-(.+)\.json$")
    runs = []
    for path in sorted(glob.glob(os.path.join(results, f"compare_all-{stamp}-*.json"))):
        m = pattern.search(os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            runs.append((m.group(1), m.group(2), os.path.basename(path), json.load(f)))
    # Redis first, then PostgreSQL; tests in the order they ran (file times).
    runs.sort(key=lambda r: (r[0] != "redis", os.path.getmtime(os.path.join(results, r[2]))))
    return runs


def rows(runs):
    for protocol, test, _, cmp in runs:
        for e in cmp["endpoints"]:
            m = e["median"]
            yield {
                "protocol": protocol, "test": test, "workload": cmp["workload"],
                "endpoint": e["name"], "target": e["target"], "rounds": cmp["rounds"],
                "connections": cmp["connections"], "pipeline": cmp["pipeline"],
                "ops_per_s": round(m["ops_per_s"], 1), "ops_per_s_ratio": e["ops_per_s_ratio"],
                "p50_us": m["p50"], "p90_us": m["p90"], "p99_us": m["p99"],
                "p999_us": m["p999"], "max_us": m["max"], "p99_ratio": e["p99_ratio"],
                "errors": m["errors"],
            }


def table(runs, protocol):
    out = []
    selected = [r for r in runs if r[0] == protocol]
    if not selected:
        return out
    names = [e["name"] for e in selected[0][3]["endpoints"]]
    reference = names[0]
    out.append(f"| test | endpoint | ops/s | vs {reference} | p50 µs | p99 µs | p99.9 µs | errors |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for _, test, _, cmp in selected:
        shape = f"{test} (c={cmp['connections']}, P={cmp['pipeline']})"
        for i, e in enumerate(cmp["endpoints"]):
            m = e["median"]
            out.append(
                f"| {shape if i == 0 else ''} | {e['name']} | {m['ops_per_s']:,.0f} | "
                f"{e['ops_per_s_ratio']:.2f} | {m['p50']:.0f} | {m['p99']:.0f} | "
                f"{m['p999']:.0f} | {m['errors']} |"
            )
    return out


def main():
    p = argparse.ArgumentParser()
    for name in ["stamp", "results", "csv", "summary", "machine", "load", "features",
                 "versions", "commands", "settings"]:
        p.add_argument("--" + name, required=True)
    p.add_argument("--note", default="")
    a = p.parse_args()

    runs = load(a.results, a.stamp)
    if not runs:
        sys.exit(f"no compare_all-{a.stamp}-*.json in {a.results}")
    with open(a.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for row in rows(runs):
            w.writerow(row)

    with open(a.versions) as f:
        versions = [l.strip() for l in f if l.strip()]
    with open(a.commands) as f:
        commands = [l.rstrip() for l in f if l.strip()]
    rel = lambda path: os.path.relpath(path, os.path.dirname(os.path.abspath(a.summary)))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = [
        "# Benchmark results",
        "",
        "The latest run of `bench/compare_all.sh`, kept as the record; earlier runs",
        "stay in `bench/results/`. Medians over rounds; ratios against the store",
        "reached directly (throughput: higher is better; p99: lower is better).",
        "",
        f"- date: {now}",
        f"- machine: {a.machine}",
        f"- load average (1/5/15 min): {a.load}",
    ]
    if a.note:
        md.append(f"- note: {a.note}")
    md += [
        f"- custos features switched on: {a.features}"
        + ("" if a.features != "none" else
           " (the bare proxy: policy, masking and audit are switched on through"
           " CUSTOS_TARGET_EXTRA / CUSTOS_CONFIG_EXTRA once configured; see the script's header)"),
        f"- settings: `{a.settings}`",
        "- versions:",
    ]
    md += [f"  - {v}" for v in versions]
    md += ["", "## Redis", ""] + (table(runs, "redis") or ["(not run)"])
    md += ["", "## PostgreSQL", ""] + (table(runs, "postgres") or ["(not run)"])
    md += NOTES.strip("\n").split("\n")
    md += [
        "",
        "## Files",
        "",
        f"- table: [{os.path.basename(a.csv)}]({rel(a.csv)})",
    ]
    svg = os.path.join(a.results, f"compare_all-{a.stamp}.svg")
    if os.path.exists(svg):
        md.append(f"- latency by percentile, first test: [{os.path.basename(svg)}]({rel(svg)})")
    for protocol, test, name, _ in runs:
        md.append(f"- {protocol} {test}: [{name}]({rel(os.path.join(a.results, name))}),"
                  f" [plot]({rel(os.path.join(a.results, name[:-5] + '.svg'))})")
    md += ["", "## Commands", "", "Passwords come from CUSTOS_LOADTEST_PASSWORD; ports are the run's.", "", "```"]
    md += commands
    md += ["```", ""]
    with open(a.summary, "w") as f:
        f.write("\n".join(md))
    print("\n".join(md[md.index("## Redis"):md.index("## Files")]))


if __name__ == "__main__":
    main()
