#!/usr/bin/env bash
# Exhaustion, two ways.
#  1. Descriptors: zonefwd under a limit of 256 open files, 2,000 queries at a time
#     towards a route whose upstream never answers (each holds a socket until the
#     route's deadline), while a second client asks cached names and a third new names
#     of a working route. Reports how the cached and the working-route queries fared
#     while descriptors were short, how many log lines that cost, and whether new
#     names resolve once the load stops.
#  2. Memory: the cache at max_entries filled with ~1 KiB answers (NSD's TXT for
#     every name), then 50% more: RSS at full and after.
# Against NSD on loopback and a silent UDP socket; nothing leaves the machine.
#
#   bash bench/exhaustion.sh
set -euo pipefail
cd "$(dirname "$0")/.."

NSD_PORT=5371
PORT=5370
SILENT=5373
ENTRIES=${ENTRIES:-100000}

for cmd in dnsperf nsd prlimit; do
  command -v "$cmd" >/dev/null || { echo "missing $cmd (apt-get install dnsperf nsd util-linux)" >&2; exit 1; }
done
cargo build --release --quiet --bin zonefwd
source bench/nsd.sh
bench_workdir
start_nsd "$work" "$NSD_PORT"
python3 -c "import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', $SILENT)); time.sleep(10**6)" &
pids+=($!)

cat >"$work/zonefwd.toml" <<EOT
[server]
listen = ["127.0.0.1:$PORT"]
udp_threads = 1
client_qps = 100000000
client_max_inflight = 100000
max_inflight = 100000
loop_detection = false
[cache]
max_entries = $ENTRIES
[[route]]
name = "silent"
zones = ["silent.test"]
upstreams = ["127.0.0.1:$SILENT"]
timeout = "3s"
max_fails = 0
[[route]]
name = "bench"
zones = ["."]
upstreams = ["127.0.0.1:$NSD_PORT"]
EOT
seq 0 99 | awk '{ print "host" $1 ".bench.test A" }' >"$work/hit.txt"
seq 0 999999 | awk '{ print "q" $1 ".silent.test A" }' >"$work/silent.txt"
seq 0 999999 | awk '{ print "w" $1 ".bench.test A" }' >"$work/working.txt"
seq 0 $((ENTRIES * 3 / 2 - 1)) | awk '{ print "t" $1 ".bench.test TXT" }' >"$work/txt.txt"

codes() { awk '/Queries completed/ { c = $3 } /Queries lost/ { l = $3 } /Response codes/ { $1 = $2 = ""; r = $0 } END { printf "completed %s, lost %s,%s", c, l, r }' "$1"; }

echo "== descriptors: limit 256"
start_zonefwd --nofile=256:256
dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/hit.txt" -n 1 -q 10 >/dev/null 2>&1 || true
lines_before=$(wc -l <"$work/zonefwd.log")
dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/silent.txt" -c 4 -q 2000 -l 20 -t 5 >"$work/silent.out" 2>&1 &
load=$!
sleep 3
echo "descriptors open under the load: $(ls "/proc/$zpid/fd" | wc -l) of 256"
dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/hit.txt" -c 1 -q 10 -l 10 -t 2 >"$work/hits.out" 2>&1 &
hits=$!
dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/working.txt" -c 1 -q 10 -l 10 -t 6 >"$work/working.out" 2>&1
wait "$hits" || true
echo "cached names while short of descriptors: $(codes "$work/hits.out")"
echo "new names of a working route meanwhile: $(codes "$work/working.out")"
wait "$load" || true
echo "the silent route's own queries: $(codes "$work/silent.out")"
echo "log lines written during the load: $(($(wc -l <"$work/zonefwd.log") - lines_before))"
# What was logged, each distinct line once with its count (timestamps cut).
tail -n +$((lines_before + 1)) "$work/zonefwd.log" | cut -c29-220 | sort | uniq -c | sort -rn >"$work/lines.txt" || true
head -5 "$work/lines.txt"
sleep 4
echo "after the load: descriptors $(ls "/proc/$zpid/fd" | wc -l); a new name: $(dig +short +time=2 @127.0.0.1 -p "$PORT" after-load.bench.test A)"
kill "$zpid"; wait "$zpid" 2>/dev/null || true

echo "== memory: $ENTRIES entries of ~1 KiB answers, then 50% more"
start_zonefwd
head -n "$ENTRIES" "$work/txt.txt" >"$work/fill.txt" || true
dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/fill.txt" -n 1 -c 4 -q 200 -e >/dev/null 2>&1 || true
full=$(awk '/VmRSS/ { print $2 }' "/proc/$zpid/status")
dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/txt.txt" -n 1 -c 4 -q 200 -e >/dev/null 2>&1 || true
more=$(awk '/VmRSS/ { print $2 }' "/proc/$zpid/status")
echo "RSS with the cache full: $((full / 1024)) MiB; after $((ENTRIES * 3 / 2)) more answers: $((more / 1024)) MiB (peak $(awk '/VmHWM/ { print int($2 / 1024) }' "/proc/$zpid/status") MiB)"
kill "$zpid"; wait "$zpid" 2>/dev/null || true
