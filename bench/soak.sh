#!/usr/bin/env bash
# Soak: PHASE seconds (default 600) of cache misses at 80% of the miss rate zonefwd
# sustains here (measured first, 10 s flat out), then PHASE seconds of the mixed
# workload (90% of 1000 names repeated, 5% new names, 5% NXDOMAIN) at the same rate,
# against NSD on loopback. Every 10 s it samples zonefwd's RSS, open descriptors,
# threads, queries in flight and cache entries (the last two from /metrics) into
# bench/results/DATE-soak.csv, and bench/soak_plot.py draws DATE-soak.png. At the end
# it prints what dnsperf lost in each phase and the RSS drift after warm-up.
#
#   bash bench/soak.sh                 # 2 x 10 minutes
#   PHASE=60 bash bench/soak.sh        # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

PHASE=${PHASE:-600}
NSD_PORT=5361
PORT=5360
METRICS=5362
OUT=${OUT:-bench/results}

for cmd in dnsperf nsd curl; do
  command -v "$cmd" >/dev/null || { echo "missing $cmd (apt-get install dnsperf nsd curl)" >&2; exit 1; }
done
python3 -c "import matplotlib" 2>/dev/null || pip install -q matplotlib
cargo build --release --quiet --bin zonefwd
source bench/nsd.sh
bench_workdir
start_nsd "$work" "$NSD_PORT"

cat >"$work/zonefwd.toml" <<EOT
[server]
listen = ["127.0.0.1:$PORT"]
metrics = "127.0.0.1:$METRICS"
udp_threads = 1
client_qps = 100000000
client_max_inflight = 100000
max_inflight = 100000
loop_detection = false
[[route]]
name = "bench"
zones = ["."]
upstreams = ["127.0.0.1:$NSD_PORT"]
EOT
python3 - "$work" <<'PY'
import random, sys
w = sys.argv[1]
random.seed(11)
tag = "%08x" % random.getrandbits(32)
with open(f"{w}/miss.txt", "w") as f:
    f.writelines(f"s{i}-{tag}.bench.test A\n" for i in range(60_000_000 // 10))
lines = []
for i in range(900_000):
    n = random.randrange(1000)
    lines.append(f"common{n}.bench.test {'A' if random.random() < 0.7 else 'AAAA'}\n")
for i in range(50_000):
    lines.append(f"m{i}-{tag}.bench.test A\n")
    lines.append(f"nx{i}-{tag}.empty.test A\n")
random.shuffle(lines)
with open(f"{w}/mixed.txt", "w") as f:
    f.writelines(lines)
PY

start_zonefwd

# The sustained miss rate, flat out.
dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/miss.txt" -c 8 -q 256 -l 10 >"$work/max.out" 2>&1 || true
max=$(awk '/Queries per second/ { printf "%d", $4 }' "$work/max.out")
rate=$((max * 8 / 10))
echo "sustained miss rate $max qps; soaking at $rate qps, $PHASE s per phase" >&2

mkdir -p "$OUT"
stamp=$(date -u +%Y-%m-%d)
csv="$OUT/$stamp-soak.csv"
echo "seconds,phase,rss_kib,descriptors,threads,inflight,cache_entries" >"$csv"
metric() { curl -s "http://127.0.0.1:$METRICS/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
sample() { # phase
  local rss fds threads
  rss=$(awk '/VmRSS/ { print $2 }' "/proc/$zpid/status")
  fds=$(ls "/proc/$zpid/fd" | wc -l)
  threads=$(awk '/Threads/ { print $2 }' "/proc/$zpid/status")
  echo "$(($(date +%s) - t0)),$1,$rss,$fds,$threads,$(metric zonefwd_inflight),$(metric zonefwd_cache_entries)" >>"$csv"
}
t0=$(date +%s)
for phase in miss mixed; do
  # The miss names are more than a phase sends; mixed repeats its file as needed.
  dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/$phase.txt" -c 8 -q 256 -Q "$rate" -l "$PHASE" >"$work/$phase.out" 2>&1 &
  dp=$!
  while kill -0 "$dp" 2>/dev/null; do
    sample "$phase"
    sleep 10
  done
  wait "$dp" || true
  awk -v p="$phase" '/Queries sent/ { s = $3 } /Queries completed/ { c = $3 } /Queries lost/ { l = $3 } /Response codes/ { $1 = $2 = ""; r = $0 }
    END { printf "%s: sent %s, completed %s, lost %s;%s\n", p, s, c, l, r }' "$work/$phase.out" | tee -a "$OUT/$stamp-soak.txt"
done
python3 bench/soak_plot.py "$csv" | tee -a "$OUT/$stamp-soak.txt"
