"""Draws bench/soak.sh's samples (RSS, descriptors, threads, in flight, cache entries
over time, one panel each) as a PNG next to the CSV, and prints the RSS drift after
warm-up: from the first sample past the first minute to the last one."""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    path = sys.argv[1]
    rows = list(csv.DictReader(open(path)))
    t = [int(r["seconds"]) for r in rows]
    panels = [("rss_kib", "RSS (MiB)", 1 / 1024), ("descriptors", "open descriptors", 1),
              ("threads", "threads", 1), ("inflight", "queries in flight", 1),
              ("cache_entries", "cache entries", 1)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 11), sharex=True)
    switch = next((int(r["seconds"]) for r in rows if r["phase"] == "mixed"), None)
    for ax, (key, label, scale) in zip(axes, panels):
        ax.plot(t, [float(r[key] or 0) * scale for r in rows], color="#d9480f")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        if switch is not None:
            ax.axvline(switch, color="#868e96", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    axes[0].set_title("zonefwd soak: cache misses at 80% of the sustained rate, then the mixed workload (dashed)")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    out = os.path.splitext(path)[0] + ".png"
    fig.savefig(out, dpi=90)
    warm = next((r for r in rows if int(r["seconds"]) >= 60), rows[0])
    first, last = float(warm["rss_kib"]), float(rows[-1]["rss_kib"])
    # After warm-up, as for RSS; a run shorter than the warm-up has only its samples.
    fds = [int(r["descriptors"]) for r in rows if int(r["seconds"]) >= 60] or [
        int(r["descriptors"]) for r in rows]
    threads = {r["threads"] for r in rows}
    print(f"RSS after warm-up: {first / 1024:.1f} MiB -> {last / 1024:.1f} MiB "
          f"({(last - first) / first * 100:+.1f}%); descriptors {min(fds)}-{max(fds)}; "
          f"threads {', '.join(sorted(threads))}; plot {out}")


if __name__ == "__main__":
    main()
