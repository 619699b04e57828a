#!/usr/bin/env python3
"""Summarises bench/replicas.sh: the client stream's CSV cut into windows, one per
event, as a markdown table; checks the goals and exits 1 when one is missed.

  replicas_summary.py STREAM.csv EVENTS STARTED GENUINE_TTL

EVENTS: one line per event, "epoch-seconds goal label", where goal is
  none        nothing is asked of the window
  no-failure  no client query sent in the window may fail
  stale       some repeated names must be answered stale
A query fails when it gets no answer within the client's timeout or any rcode but
NOERROR. An answer is stale when its TTL is above the cloud's own (zonefwd serves
stale answers with TTL 30, RFC 8767 section 4).
"""
import csv
import statistics
import sys


def main():
    stream, events_path, started_path, genuine_ttl = sys.argv[1:5]
    genuine_ttl = int(genuine_ttl)
    start = float(open(started_path).read())
    events = []
    for line in open(events_path):
        at, goal, label = line.rstrip("\n").split(" ", 2)
        events.append((float(at) - start, goal, label))
    rows = list(csv.DictReader(open(stream)))
    missed = []
    print("| event | unique names: asked | failed | failing for | p50 / max latency | repeated names: asked | failed | answered stale |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, (at, goal, label) in enumerate(events):
        end = events[i + 1][0] if i + 1 < len(events) else float("inf")
        window = [r for r in rows if at <= float(r["sent"]) < end]
        unique = [r for r in window if r["kind"] == "unique"]
        repeat = [r for r in window if r["kind"] == "repeat"]
        failed_u = [r for r in unique if r["outcome"] != "NOERROR"]
        failed_r = [r for r in repeat if r["outcome"] != "NOERROR"]
        stale = [r for r in repeat if r["outcome"] == "NOERROR" and r["ttl"] and int(r["ttl"]) > genuine_ttl]
        span = "-"
        if failed_u or failed_r:
            sent = [float(r["sent"]) for r in failed_u + failed_r]
            span = f"{max(sent) - min(sent):.1f} s"
        lat = [float(r["latency_ms"]) for r in unique if r["outcome"] == "NOERROR"]
        latency = f"{statistics.median(lat):.0f} / {max(lat):.0f} ms" if lat else "-"
        print(f"| {label} | {len(unique)} | {len(failed_u)} | {span} | {latency} | {len(repeat)} | {len(failed_r)} | {len(stale)} |")
        if goal == "no-failure" and (failed_u or failed_r):
            missed.append(f"{label}: {len(failed_u) + len(failed_r)} client queries failed")
        if goal == "stale" and not stale:
            missed.append(f"{label}: {len(failed_r)} repeated names failed, {len(stale)} answered stale")
        if not window:
            missed.append(f"{label}: no query was sent in the window")
    for m in missed:
        print(f"goal missed: {m}", file=sys.stderr)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
