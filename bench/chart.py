#!/usr/bin/env python3
"""Turns a bench/run.sh CSV into a Markdown table (with zonefwd's ratios against
dnsdist and Unbound) and an SVG bar chart of queries per CPU-second.

    python3 bench/chart.py bench/results/DATE.csv "machine and versions"

Writes DATE.md and DATE.svg next to the CSV, and copies the SVG to latest.svg.
No third-party modules: the SVG is written by hand.
"""
import csv
import html
import os
import shutil
import sys

COLORS = {"zonefwd": "#d9480f", "dnsdist": "#1c7ed6", "dnsdist-cache": "#74c0fc", "unbound": "#37b24d",
          "kresd": "#ae3ec9", "dnsmasq": "#868e96", "reflector": "#212529", "relay": "#495057"}
NAMES = {"miss": "cache miss (unique names)", "hit": "cache hit (100 names)",
         "tcp": "cache hit over TCP", "mixed": "mixed (90% repeated, 10% new/NXDOMAIN)",
         "upstream-tcp": "cache miss, forwarded over TCP"}


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

    # Grouped bars: one group per workload, one bar per server.
    bar, gap, group_gap, left, top, height = 26, 4, 40, 70, 50, 260
    peak = max(float(r["queries_per_cpu_s"]) for r in rows) * 1.1
    width = left + len(workloads) * (len(servers) * (bar + gap) + group_gap) + 20
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + height + 110}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14" font-weight="bold">Queries answered per CPU-second of the server process (higher is better)</text>',
           f'<text x="{left}" y="36" fill="#555">{html.escape(about)}</text>']
    for i in range(6):
        v = peak * i / 5
        y = top + height - height * i / 5
        svg.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.0f}" y2="{y:.0f}" stroke="#ddd"/>')
        svg.append(f'<text x="{left - 6}" y="{y + 4:.0f}" text-anchor="end">{v / 1000:.0f}k</text>')
    x = left + 10
    for w in workloads:
        gx = x
        for s in servers:
            v = qpc(w, s)
            if v is not None:
                h = height * v / peak
                svg.append(f'<rect x="{x}" y="{top + height - h:.0f}" width="{bar}" height="{h:.0f}" fill="{COLORS.get(s, "#000")}"/>')
                svg.append(f'<text x="{x + bar / 2}" y="{top + height - h - 4:.0f}" text-anchor="middle" font-size="9">{v / 1000:.0f}k</text>')
            x += bar + gap
        svg.append(f'<text x="{(gx + x) / 2}" y="{top + height + 16}" text-anchor="middle">{html.escape(NAMES.get(w, w))}</text>')
        x += group_gap
    lx = left
    for s in servers:
        svg.append(f'<rect x="{lx}" y="{top + height + 40}" width="12" height="12" fill="{COLORS.get(s, "#000")}"/>')
        svg.append(f'<text x="{lx + 16}" y="{top + height + 50}">{s}</text>')
        lx += 90
    svg.append("</svg>")
    open(base + ".svg", "w").write("\n".join(svg) + "\n")
    shutil.copy(base + ".svg", os.path.join(os.path.dirname(path), "latest.svg"))
    print("\n".join(md))


if __name__ == "__main__":
    main()
