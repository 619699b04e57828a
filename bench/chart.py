#!/usr/bin/env python3
"""Turns a bench/run.sh CSV into a Markdown table (with zonefwd's ratios against
each peer) and a bar chart of queries per CPU-second, drawn with matplotlib (Debian:
python3-matplotlib), as bench/soak_plot.py draws the soak.

    python3 bench/chart.py bench/results/DATE.csv "machine and versions"

Writes DATE.md and DATE.png next to the CSV, and copies the chart to latest.png.
"""
import csv
import os
import shutil
import sys

COLORS = {"zonefwd": "#d9480f", "dnsdist": "#1c7ed6", "dnsdist-cache": "#74c0fc", "unbound": "#37b24d",
          "kresd": "#ae3ec9", "dnsmasq": "#868e96", "reflector": "#212529", "relay": "#495057", "relay-ports": "#adb5bd"}
NAMES = {"miss": "cache miss (unique names)", "hit": "cache hit (100 names)",
         "tcp": "cache hit over TCP", "mixed": "mixed (90% repeated, 10% new/NXDOMAIN)",
         "upstream-tcp": "cache miss, forwarded over TCP"}


def chart(workloads, servers, qpc, about, out):
    """Grouped bars with matplotlib: one group per workload, one bar per server."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / len(servers)
    fig, ax = plt.subplots(figsize=(2 + 2.2 * len(workloads), 5), dpi=100)
    for i, s in enumerate(servers):
        xs, ys = [], []
        for j, w in enumerate(workloads):
            v = qpc(w, s)
            if v is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(v / 1000)
        bars = ax.bar(xs, ys, width, label=s, color=COLORS.get(s, "#000"))
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(range(len(workloads)), [NAMES.get(w, w) for w in workloads], fontsize=8)
    ax.set_ylabel("thousand queries per CPU-second")
    ax.set_title("Queries answered per CPU-second of the server process (higher is better)", fontsize=10)
    fig.text(0.01, 0.01, about, fontsize=7, color="#555")
    ax.grid(axis="y", color="#ddd")
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out)
    plt.close(fig)


def main():
    path, about = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
    rows = list(csv.DictReader(open(path)))
    if not rows:
        return  # no workload ran (LATENCY=1 WORKLOADS=" ", say)
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    servers = list(dict.fromkeys(r["server"] for r in rows))
    by = {(r["workload"], r["server"]): r for r in rows}
    base = os.path.splitext(path)[0]

    def qpc(w, s):
        r = by.get((w, s))
        return float(r["queries_per_cpu_s"]) if r else None

    md = [f"Run: {os.path.basename(base)}. {about}", "",
          "| workload | server | qps | mean ms | p99 ms | lost | CPU s | queries/CPU-s | peak RSS MiB | zonefwd vs this |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w in workloads:
        for s in servers:
            r = by.get((w, s))
            if not r:
                continue
            z = qpc(w, "zonefwd")
            mine = qpc(w, s)
            ratio = "" if s == "zonefwd" or not z or not mine else f"{z / mine:.2f}x"
            md.append(f"| {w} | {s} | {float(r['qps']):,.0f} | {r['mean_ms']} | {r['p99_ms']} | {r['lost']} | "
                      f"{r['cpu_s']} | {float(r['queries_per_cpu_s']):,.0f} | {int(r['peak_rss_kib']) / 1024:.1f} | {ratio} |")
    open(base + ".md", "w").write("\n".join(md) + "\n")

    # dnsmasq forks a process per TCP connection and only the parent's CPU is counted:
    # its TCP figure is no measurement, so it is not drawn.
    drawn = lambda w, s: None if (w, s) == ("tcp", "dnsmasq") else qpc(w, s)
    chart(workloads, servers, drawn, about, base + ".png")
    shutil.copy(base + ".png", os.path.join(os.path.dirname(path), "latest.png"))
    print("\n".join(md))


if __name__ == "__main__":
    main()
