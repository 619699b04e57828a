#!/usr/bin/env bash
# Cache-hit throughput: zonefwd and Unbound as forwarders in front of the same NSD
# authoritative server, both answering a small repeated set of names from cache.
# Reports, per server, dnsperf's queries per second and the server process's CPU
# seconds, and their ratio: queries answered per CPU-second.
#
#   bash bench/cache_hits.sh            # 10 s per run; DURATION=30 for longer
#
# Needs (Debian): dnsperf nsd unbound. Installs them when run as root.
# Everything listens on 127.0.0.1; nothing leaves the machine. Not part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-256}
NAMES=${NAMES:-100}
# Threads for both servers (zonefwd udp_threads, Unbound num-threads): compare like
# with like. On 2 cores dnsperf needs one of them.
THREADS=${THREADS:-1}
NSD_PORT=5301
ZONEFWD_PORT=5310
UNBOUND_PORT=5320

need=()
for cmd in dnsperf nsd unbound; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y -qq dnsperf nsd unbound >/dev/null
  else
    echo "missing: ${need[*]} (apt-get install dnsperf nsd unbound)" >&2
    exit 1
  fi
fi
cargo build --release --quiet

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# --- the authoritative upstream: a wildcard zone -------------------------------
cat >"$work/bench.zone" <<'EOF'
$ORIGIN bench.test.
$TTL 3600
@   IN SOA ns1 hostmaster 1 3600 600 86400 300
@   IN NS  ns1
ns1 IN A   127.0.0.1
*   IN A   192.0.2.1
EOF
cat >"$work/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1@$NSD_PORT
  server-count: 1
  zonesdir: "$work"
  database: ""
  pidfile: "$work/nsd.pid"
  xfrdfile: "$work/xfrd.state"
  zonelistfile: "$work/zone.list"
  username: ""
  verbosity: 0
zone:
  name: bench.test
  zonefile: bench.zone
EOF
nsd -d -c "$work/nsd.conf" >"$work/nsd.log" 2>&1 &
pids+=($!)

# --- the forwarders, same upstream, same cache-hit workload --------------------
cat >"$work/zonefwd.toml" <<EOF
[server]
listen = ["127.0.0.1:$ZONEFWD_PORT"]
udp_threads = $THREADS
[[route]]
name = "bench"
zones = ["."]
upstreams = ["127.0.0.1:$NSD_PORT"]
EOF
cat >"$work/unbound.conf" <<EOF
server:
  interface: 127.0.0.1@$UNBOUND_PORT
  num-threads: $THREADS
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: "$work/unbound.pid"
  use-syslog: no
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "iterator"
  qname-minimisation: no
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$NSD_PORT
EOF

for i in $(seq 1 "$NAMES"); do echo "host$i.bench.test A"; done >"$work/queries.txt"

cpu_seconds() { # utime + stime of a process, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

run() { # name port pid
  local name=$1 port=$2 pid=$3
  # Warm the cache, then measure.
  dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -n 3 -q 10 >/dev/null 2>&1 || true
  local before after
  before=$(cpu_seconds "$pid")
  dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -c "$CLIENTS" -q "$OUTSTANDING" \
    -l "$DURATION" >"$work/$name.out" 2>&1
  after=$(cpu_seconds "$pid")
  local qps lost rss
  qps=$(awk '/Queries per second/ { print $4 }' "$work/$name.out")
  lost=$(awk '/Queries lost/ { print $3 }' "$work/$name.out")
  rss=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
  awk -v n="$name" -v q="$qps" -v b="$before" -v a="$after" -v d="$DURATION" -v l="$lost" -v r="$rss" 'BEGIN {
    cpu = a - b; total = q * d
    printf "%-8s %10.0f qps  %6.2f cpu-s  %10.0f queries/cpu-s  lost %s  peak rss %d KiB\n", n, q, cpu, total / cpu, l, r
  }'
}

sleep 0.5
./target/release/zonefwd run -c "$work/zonefwd.toml" 2>"$work/zonefwd.log" &
zpid=$!
pids+=("$zpid")
sleep 0.5
run zonefwd "$ZONEFWD_PORT" "$zpid"
kill "$zpid"

unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 &
upid=$!
pids+=("$upid")
sleep 1
run unbound "$UNBOUND_PORT" "$upid"

echo "($(nproc) cores; $THREADS thread(s) each; dnsperf -c $CLIENTS -q $OUTSTANDING -l $DURATION; $NAMES names; $(unbound -V | head -1); zonefwd $(./target/release/zonefwd --version | cut -d' ' -f2))"
