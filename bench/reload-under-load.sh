#!/usr/bin/env bash
# Reloads under load: while dnsperf asks zonefwd (the release binary) without pause,
# RELOADS SIGHUPs switch between two valid configurations (routes, ACL and upstreams
# differ) with an invalid file every tenth time. Reports what dnsperf lost, the
# response codes, the reloads zonefwd logged as applied and refused, descriptors and
# cache entries before and after. Against NSD on loopback; nothing leaves the machine.
#
#   bash bench/reload-under-load.sh             # 100 reloads over about 20 s
#   RELOADS=500 INTERVAL=0.02 bash bench/reload-under-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RELOADS=${RELOADS:-100}
INTERVAL=${INTERVAL:-0.2}
NSD_PORT=5351
PORT=5350
METRICS=5352

for cmd in dnsperf nsd; do
  command -v "$cmd" >/dev/null || { echo "missing $cmd (apt-get install dnsperf nsd)" >&2; exit 1; }
done
cargo build --release --quiet --bin zonefwd
source bench/nsd.sh
bench_workdir
start_nsd "$work" "$NSD_PORT"

# Two configurations: A sends everything to NSD; B splits a zone onto a route of its
# own, gives the upstream other settings (a new upstream to zonefwd: its sockets and
# marks are rebuilt), and narrows the ACL (still admitting loopback). The invalid one
# has a route without upstreams.
server="[server]
listen = [\"127.0.0.1:$PORT\"]
metrics = \"127.0.0.1:$METRICS\"
client_qps = 100000000
client_max_inflight = 100000
max_inflight = 100000
loop_detection = false"
cat >"$work/a.toml" <<EOT
$server
[acl]
allow = ["127.0.0.0/8"]
[[route]]
name = "bench"
zones = ["."]
upstreams = ["127.0.0.1:$NSD_PORT"]
EOT
cat >"$work/b.toml" <<EOT
$server
[acl]
allow = ["127.0.0.1/32", "10.0.0.0/8"]
[[route]]
name = "bench"
zones = ["."]
upstreams = ["127.0.0.1:$NSD_PORT"]
policy = "round_robin"
max_fails = 5
[[route]]
name = "hosts"
zones = ["bench.test"]
upstreams = ["127.0.0.1:$NSD_PORT"]
max_fails = 5
EOT
printf '%s\n[[route]]\nname = "broken"\nzones = ["."]\nupstreams = []\n' "$server" >"$work/bad.toml"
cp "$work/a.toml" "$work/zonefwd.toml"

# Repeated names (cache hits) and unique ones (forwarded), interleaved.
python3 - "$work" <<'PY'
import sys
w = sys.argv[1]
with open(f"{w}/names.txt", "w") as f:
    for i in range(2_000_000):
        f.write(f"host{i % 100}.bench.test A\n" if i % 2 else f"r{i}.bench.test A\n")
PY

start_zonefwd
dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/names.txt" -n 1 -q 50 -l 3 >/dev/null 2>&1 || true
fds() { ls "/proc/$zpid/fd" | wc -l; }
entries() { curl -s "http://127.0.0.1:$METRICS/metrics" | awk '/^zonefwd_cache_entries / { print $2 }'; }
fds_before=$(fds)
entries_before=$(entries)

duration=$(awk -v n="$RELOADS" -v i="$INTERVAL" 'BEGIN { printf "%d", n * i + 5 }')
dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/names.txt" -c 4 -q 100 -l "$duration" >"$work/dnsperf.out" 2>&1 &
perf_pid=$!
sleep 2
for i in $(seq "$RELOADS"); do
  if ((i % 10 == 0)); then
    cp "$work/bad.toml" "$work/zonefwd.toml"
  elif ((i % 2 == 0)); then
    cp "$work/a.toml" "$work/zonefwd.toml"
  else
    cp "$work/b.toml" "$work/zonefwd.toml"
  fi
  kill -HUP "$zpid"
  sleep "$INTERVAL"
done
cp "$work/a.toml" "$work/zonefwd.toml"
kill -HUP "$zpid"
wait "$perf_pid" || true
sleep 3
fds_after=$(fds)
entries_after=$(entries)

applied=$(grep -c "configuration reloaded" "$work/zonefwd.log" || true)
refused=$(grep -ci "reload failed\|keeping the running configuration" "$work/zonefwd.log" || true)
echo "reloads sent: $((RELOADS + 1)) ($((RELOADS / 10)) of them invalid); logged as applied: $applied, refused: $refused"
grep -E "Queries (sent|completed|lost)|Response codes|Queries per second" "$work/dnsperf.out"
echo "descriptors: $fds_before before, $fds_after after"
echo "cache entries: $entries_before before, $entries_after after"
