#!/usr/bin/env bash
# The fault matrix at full size: for each fault of tests/fault_matrix.rs on each route
# shape, 2,000 client queries at 200 per second through zonefwd (release build) with
# the default route timers, a fault-injecting proxy between zonefwd and its fake
# upstream. Prints the README's table and keeps it in bench/results/DATE-fault-matrix.md.
# Everything stays on 127.0.0.0/8. About 4 minutes.
#
#   bash bench/fault-matrix.sh
#   FAULT_ROWS="loss|blackholed" bash bench/fault-matrix.sh   # only rows whose fault says so
#   FAULT_SLOW=1 bash bench/fault-matrix.sh   # and, per row, when each query that waited
#                                             # the try timeout was sent, and how long
set -euo pipefail
cd "$(dirname "$0")/.."

out="bench/results/$(date -u +%F)-fault-matrix${FAULT_ROWS:+-some-rows}.md"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --quiet --test fault_matrix -- --ignored --nocapture --exact fault_matrix_report \
  2>&1 | tee "$log" >&2 || { echo "the matrix run failed" >&2; exit 1; }
{
  echo "# Fault matrix, $(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo
  grep -E '^(\||[0-9]+ queries per row)' "$log"
} | tee "$out"
