#!/usr/bin/env bash
# Replicas and on-prem DNS as separate hosts: network namespaces this script creates,
# joined by veth pairs to a bridge in a namespace of their own, each with its address:
#
#   client 10.53.0.50 -> BIND 10.53.0.2 (on-prem; forwards the cloud zone to both)
#     -> zonefwd replicas 10.53.0.11 and 10.53.0.12 -> cloud resolver 10.53.0.100
#
# The cloud resolver is dnsmasq answering every name of the zone with a TTL of
# GENUINE_TTL seconds. A client stream asks BIND new names (20/s) and a few repeated
# ones (5/s) throughout, while the events happen one after another: a replica stopped
# (SIGTERM) and started again, one killed (SIGKILL) and started again, one cut off
# (its link down) and back, and the cloud resolver cut off for CLOUD_CUT seconds,
# longer than the answers' TTL. Prints a table per event (bench/replicas_summary.py)
# and exits 1 when a goal is missed:
#   - stopped, killed, cut off or restarted replica: no client query fails;
#   - cloud cut off: repeated names are answered stale (how many failed is reported).
# Exits 77, saying why, when the machine does not allow it (not root, no network
# namespaces, bind9 or dnsmasq missing): skipped, never passed. Everything it creates
# is removed on exit, whatever the exit. Nothing is sent outside the namespaces; the
# machine's own network is not touched.
#
#   bash bench/replicas.sh                  # about 75 s
#   PHASE=3 CLOUD_CUT=8 bash bench/replicas.sh
#   ZONEFWD=target/debug/zonefwd OUT=results.md bash bench/replicas.sh
#   KEEP=1 bash bench/replicas.sh           # keeps the logs and the stream's CSV
set -euo pipefail
cd "$(dirname "$0")/.."

PHASE=${PHASE:-6}
CLOUD_CUT=${CLOUD_CUT:-12}
GENUINE_TTL=4
ZONE=privatelink.blob.core.windows.net
ZONEFWD=${ZONEFWD:-target/release/zonefwd}
P="zfr$$"

skip() { echo "skipped: $*" >&2; exit 77; }

[[ $(id -u) == 0 ]] || skip "network namespaces need root"
command -v ip >/dev/null || skip "no ip (iproute2)"
command -v named >/dev/null || skip "no named (apt-get install bind9)"
command -v dnsmasq >/dev/null || [[ -x /usr/sbin/dnsmasq ]] || skip "no dnsmasq (apt-get install dnsmasq-base)"
command -v python3 >/dev/null || skip "no python3"
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
[[ -x $ZONEFWD ]] || cargo build --release --quiet --bin zonefwd

work=$(mktemp -d)
namespaces=()
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [[ -n ${KEEP:-} ]]; then echo "kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
# Killed or interrupted, still through the EXIT trap: nothing is left behind.
trap 'exit 143' TERM
trap 'exit 130' INT

ip netns add "$P-lan" 2>"$work/err" || skip "this machine does not allow network namespaces: $(cat "$work/err")"
namespaces+=("$P-lan")
ip -n "$P-lan" link add br0 type bridge 2>"$work/err" || skip "this machine does not allow bridge devices: $(cat "$work/err")"
ip -n "$P-lan" link set br0 up

host() { # name address: a namespace with eth0 on the bridge
  local ns="$P-$1"
  ip netns add "$ns"
  namespaces+=("$ns")
  ip -n "$P-lan" link add "v-$1" type veth peer name eth0 netns "$ns" 2>"$work/err" ||
    skip "this machine does not allow veth pairs: $(cat "$work/err")"
  ip -n "$P-lan" link set "v-$1" master br0 up
  ip -n "$ns" addr add "$2/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}
host client 10.53.0.50
host onprem 10.53.0.2
host zf1 10.53.0.11
host zf2 10.53.0.12
host cloud 10.53.0.100

# The cloud resolver.
ip netns exec "$P-cloud" "$DNSMASQ" --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
  --listen-address=10.53.0.100 --port=53 --address="/$ZONE/10.1.2.3" --local-ttl="$GENUINE_TTL" \
  --log-facility="$work/dnsmasq.log" --pid-file="$work/dnsmasq.pid" --user=root &
pids+=($!)

# The replicas: one route for the zone to the cloud resolver, stale answers on.
declare -A replica_pid
start_replica() { # zf1|zf2 address
  cat >"$work/$1.toml" <<EOF
[server]
listen = ["$2:53"]
[cache]
serve_stale = "1d"
[[route]]
name = "cloud"
zones = ["$ZONE"]
upstreams = ["10.53.0.100:53"]
EOF
  ip netns exec "$P-$1" "$ZONEFWD" run -c "$work/$1.toml" >>"$work/$1.log" 2>&1 &
  replica_pid[$1]=$!
  pids+=($!)
}
start_replica zf1 10.53.0.11
start_replica zf2 10.53.0.12

# On-prem DNS: BIND forwarding the cloud zone to both replicas, as an operator sets
# it up. Its own stale answers are off, so any stale answer is zonefwd's.
mkdir -p "$work/bind"
cat >"$work/named.conf" <<EOF
options {
  directory "$work/bind";
  pid-file none;
  listen-on { 10.53.0.2; };
  listen-on-v6 { none; };
  recursion yes;
  allow-query { any; };
  dnssec-validation no;
  stale-answer-enable no;
};
controls { };
zone "$ZONE" {
  type forward;
  forward only;
  forwarders { 10.53.0.11; 10.53.0.12; };
};
EOF
ip netns exec "$P-onprem" named -g -c "$work/named.conf" -n 1 >"$work/named.log" 2>&1 &
pids+=($!)

wait_for() { # what command...
  local what=$1
  shift
  for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$what did not come up" >&2
  tail -20 "$work"/*.log >&2
  exit 1
}
asks() { ip netns exec "$P-client" dig +time=1 +tries=1 +short "@$1" "$2" A | grep -q 10.1.2.3; }
wait_for "the cloud resolver" ip netns exec "$P-zf1" dig +time=1 +tries=1 @10.53.0.100 "x.$ZONE"
wait_for "replica 1" ip netns exec "$P-onprem" dig +time=1 +tries=1 @10.53.0.11 "x.$ZONE"
wait_for "replica 2" ip netns exec "$P-onprem" dig +time=1 +tries=1 @10.53.0.12 "x.$ZONE"
wait_for "BIND" asks 10.53.0.2 "warm.$ZONE"

events="$work/events"
: >"$events"
event() { echo "$(date +%s.%N) $1 $2" >>"$events"; }
cloud_cut_total=$((CLOUD_CUT + PHASE))
seconds=$((PHASE * 9 + cloud_cut_total + 2))
ip netns exec "$P-client" python3 bench/replicas_stream.py --server 10.53.0.2 --zone "$ZONE" \
  --seconds "$seconds" --out "$work/stream.csv" --started "$work/started" &
stream=$!
pids+=($stream)
wait_for "the client stream" test -s "$work/started"

event no-failure "warm-up"
sleep "$PHASE"
event no-failure "replica 1 stopped (SIGTERM)"
kill -TERM "${replica_pid[zf1]}"
wait "${replica_pid[zf1]}" || { echo "replica 1 did not exit 0 on SIGTERM" >&2; exit 1; }
sleep "$PHASE"
event no-failure "replica 1 started again"
start_replica zf1 10.53.0.11
sleep "$PHASE"
event no-failure "replica 2 killed (SIGKILL)"
kill -KILL "${replica_pid[zf2]}"
sleep "$PHASE"
event no-failure "replica 2 started again"
start_replica zf2 10.53.0.12
sleep "$PHASE"
event no-failure "replica 1 cut off (link down)"
ip -n "$P-lan" link set v-zf1 down
sleep "$PHASE"
event no-failure "replica 1 link up again"
ip -n "$P-lan" link set v-zf1 up
sleep "$PHASE"
event stale "cloud resolver cut off for ${CLOUD_CUT} s (TTL ${GENUINE_TTL} s)"
ip -n "$P-lan" link set v-cloud down
sleep "$CLOUD_CUT"
event none "cloud resolver back"
ip -n "$P-lan" link set v-cloud up
wait "$stream"

summary="$work/summary.md"
status=0
python3 bench/replicas_summary.py "$work/stream.csv" "$events" "$work/started" "$GENUINE_TTL" >"$summary" || status=$?
{
  echo "Replicas behind BIND $(named -v | cut -d' ' -f2), $(date -u +%F), $(nproc) cores; phases of ${PHASE} s; the client waits 5 s for each answer."
  echo
  cat "$summary"
} | tee "${OUT:-/dev/null}"
if ((status)); then
  for f in zf1 zf2 named; do echo "--- $f.log" >&2; tail -15 "$work/$f.log" >&2; done
fi
exit "$status"
