#!/usr/bin/env bash
# Forwarders under loss, side by side: between each forwarder and NSD, an
# out-of-process proxy (bench/loss.py) drops each datagram, query or reply, with
# probability LOSS; the same load goes through each forwarder, one at a time: COUNT
# new names at RATE per second, each on its own socket, each waiting up to 10 s.
# Every forwarder runs with its defaults and the proxy as its one upstream (dnsdist's
# health checks are slowed to once an hour: each one lost would take its only
# backend down). Prints the README's table and keeps it in
# bench/results/DATE-loss.md. Everything stays on 127.0.0.1. About 2 minutes.
#
#   bash bench/loss.sh
#   LOSS=0.30 COUNT=2000 SERVERS="zonefwd unbound" bash bench/loss.sh
#
# Needs (Debian): nsd unbound knot-resolver dnsdist dnsutils; installs them when run
# as root.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/nsd.sh

LOSS=${LOSS:-0.05}
COUNT=${COUNT:-1000}
RATE=${RATE:-200}
SERVERS=${SERVERS:-"zonefwd zonefwd-off unbound kresd dnsdist"}
NSD_PORT=${NSD_PORT:-5391}
PROXY_PORT=${PROXY_PORT:-5392}
PORT=${PORT:-5393}
PY=/usr/bin/python3

need=()
for cmd in nsd unbound kresd dnsdist dig; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]]; then
    apt-get install -y -qq nsd unbound knot-resolver dnsdist dnsutils >/dev/null
  else
    echo "missing: ${need[*]} (apt-get install nsd unbound knot-resolver dnsdist dnsutils)" >&2
    exit 1
  fi
fi
cargo build --release --quiet

bench_workdir
start_nsd "$work" "$NSD_PORT"

write_config() { # server
  case $1 in
    zonefwd | zonefwd-off)
      local budget=""
      [[ $1 == zonefwd-off ]] && budget="retransmit_budget = 0"
      cat >"$work/zonefwd.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
[[route]]
name = "bench"
zones = ["."]
upstreams = ["127.0.0.1:$PROXY_PORT"]
$budget
EOF
      ;;
    unbound)
      cat >"$work/unbound.conf" <<EOF
server:
  interface: 127.0.0.1@$PORT
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: "$work/unbound.pid"
  use-syslog: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "iterator"
  local-zone: "test." nodefault
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$PROXY_PORT
EOF
      ;;
    kresd)
      cat >"$work/kresd.conf" <<EOF
net.listen('127.0.0.1', $PORT, { kind = 'dns' })
trust_anchors.remove('.')
policy.add(policy.all(policy.STUB('127.0.0.1@$PROXY_PORT')))
EOF
      ;;
    dnsdist)
      cat >"$work/dnsdist.conf" <<EOF
setLocal("127.0.0.1:$PORT")
setACL({"127.0.0.0/8"})
setSecurityPollSuffix("")
newServer({address="127.0.0.1:$PROXY_PORT", checkInterval=3600})
EOF
      ;;
  esac
}

start_server() { # server -> $spid
  case $1 in
    zonefwd | zonefwd-off) ./target/release/zonefwd run -c "$work/zonefwd.toml" 2>"$work/$1.log" & ;;
    unbound) unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 & ;;
    kresd) rm -rf "$work/kresd" && mkdir -p "$work/kresd"
           kresd -n -q -c "$work/kresd.conf" "$work/kresd" >"$work/kresd.log" 2>&1 & ;;
    dnsdist) dnsdist --supervised --disable-syslog -C "$work/dnsdist.conf" >"$work/dnsdist.log" 2>&1 & ;;
  esac
  spid=$!
  for _ in $(seq 100); do
    dig +time=1 +tries=1 @127.0.0.1 -p "$PORT" "ready-$RANDOM.bench.test" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "$1 did not start: $(tail -3 "$work/$1.log")" >&2
  exit 1
}

stop() { # pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

version() {
  case $1 in
    zonefwd) ./target/release/zonefwd --version ;;
    zonefwd-off) echo "zonefwd, retransmit_budget = 0" ;;
    unbound) unbound -V | awk 'NR == 1 { print "Unbound " $2 }' ;;
    kresd) kresd --version | awk 'NR == 1 { print "Knot Resolver " $NF }' ;;
    dnsdist) dnsdist --version 2>/dev/null | awk 'NR == 1 { print $1 " " $2 }' ;;
  esac
}

out="bench/results/$(date -u +%F)-loss.md"
{
  echo "# Forwarders under ${LOSS} loss each way, $(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo
  echo "$COUNT new names at $RATE per second; each forwarder with its defaults and one upstream (NSD behind bench/loss.py)."
  echo
  echo "| forwarder | answered | SERVFAIL | other | no reply | p50 | p99 | max | upstream queries per query |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
} | tee "$out"
for s in $SERVERS; do
  tag="l$RANDOM$RANDOM"
  "$PY" bench/loss.py proxy "$PROXY_PORT" "$NSD_PORT" "$LOSS" "$tag" "$work/proxy.json" &
  ppid=$!
  sleep 0.3
  write_config "$s"
  start_server "$s"
  result=$("$PY" bench/loss.py ask "$PORT" "$COUNT" "$RATE" "$tag")
  stop "$spid"
  stop "$ppid"
  "$PY" - "$(version "$s")" "$result" "$work/proxy.json" <<'EOF' | tee -a "$out"
import json, sys
name, r, stats = sys.argv[1], json.loads(sys.argv[2]), json.load(open(sys.argv[3]))
ms = lambda v: "-" if v is None else f"{v:.1f} ms"
print(f"| {name} | {r['answered']} | {r['servfail']} | {r['other']} | {r['no_reply']} | {ms(r['p50_ms'])} | {ms(r['p99_ms'])} | {ms(r['max_ms'])} | {stats['queries'] / r['asked']:.3f} |")
EOF
done
