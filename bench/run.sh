#!/usr/bin/env bash
# zonefwd against its peers, one after another, with the same upstream, the same
# routes and the same load. The upstream is NSD with a wildcard zone on loopback; the
# load is dnsperf. For each workload and server it reports qps, mean and p99 latency,
# lost queries, CPU seconds of the server process, queries per CPU-second, peak RSS,
# and zonefwd's ratios against dnsdist and Unbound.
#
#   bash bench/run.sh                       # every workload, every server, 10 s each
#   WORKLOADS="miss hit" SERVERS="zonefwd dnsdist" DURATION=20 bash bench/run.sh
#   SCALE=1 bash bench/run.sh               # also: cache size and zone count figures
#   ZONEFWD_SERVER='upstream_udp_reuse = 100' bash bench/run.sh   # extra [server] keys
#
# Workloads:
#   miss   unique names (no cache can help): forwarding cost
#   hit    100 names asked again and again: answering from cache
#   tcp    the same 100 names over TCP (dnsperf keeps its connections)
#   upstream-tcp  unique names over UDP, forwarded to the upstream over TCP (zonefwd
#          transport = "tcp", Unbound tcp-upstream: yes, dnsdist tcpOnly=true; dnsmasq
#          has no such setting and sits it out)
#   mixed  90% a repeated set of 1000 names (A and AAAA), 5% unique names,
#          5% names that do not exist (NXDOMAIN), shuffled
#   dot    the hit names over DNS over TLS (dnsperf -m dot keeps its connections)
#   doh    the hit names over DNS over HTTPS: h2load (nghttp2-client; HTTP/2, GET
#          ?dns=, 32 streams per connection), since dnsperf 2.10's DoH client keeps one
#          response buffer per connection and loses every response that arrives in the
#          same read as another (DNS-OARC/dnsperf#240): it measured 43 queries a
#          second from zonefwd and 2 from dnsdist. No p99 (h2load gives none).
#          Both against zonefwd (tls_listen, https_listen), Unbound (tls-port,
#          https-port) and dnsdist with its packet cache (addTLSLocal, addDOHLocal),
#          with one self-signed ECDSA P-256 certificate made here by openssl; only
#          those three take these rows.
# Servers: zonefwd; dnsdist (1.7) without a cache and dnsdist-cache with its packet
# cache; unbound (forward-zone); kresd (Knot Resolver, policy.STUB, cache on); dnsmasq.
# One worker thread each (THREADS=1), since on 2 cores dnsperf and NSD need the rest.
# With dnstap, each sending to fstrm_capture on a Unix socket (written to /dev/null),
# not in the default list: zonefwd-dnstap (client and forwarder queries and
# responses), unbound-dnstap (the same four), dnsdist-cache-dnstap (client queries and
# responses, cache hits included: dnsdist has no forwarder messages).
# Floors: reflector (bench/reflector.rs: a fixed answer to every query, hit rows only)
# and relay (bench/relay.rs: forwarding with no checks, miss rows only), both with the
# listeners' batching: the most any server answers, or forwards, per CPU-second here;
# and relay-ports (the same relay giving each query in flight a connected port of its
# own, kept for 10 queries as zonefwd's upstream_udp_reuse): the floor for the path
# zonefwd chose (RFC 5452), miss rows only.
#
#   LATENCY=1 bash bench/run.sh   # also: added latency at 1,000 qps, miss and hit
#   BASELINE=/tmp/zonefwd-old SERVERS="baseline zonefwd baseline zonefwd" bash bench/run.sh
#                                 # another zonefwd build ("baseline"), same config, side by side
#
# Needs (Debian): dnsperf nsd unbound dnsdist dnsmasq-base. Installs them when run as
# root. Everything listens on 127.0.0.1; nothing leaves the machine. Results go to
# bench/results/<date>.csv and .md; bench/chart.py draws the chart (matplotlib). Not part of
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-256}
THREADS=${THREADS:-1}
WORKLOADS=${WORKLOADS:-"miss hit tcp mixed upstream-tcp dot doh"}
SERVERS=${SERVERS:-"reflector relay relay-ports zonefwd dnsdist dnsdist-cache unbound kresd dnsmasq"}
LATENCY=${LATENCY:-0}
SCALE=${SCALE:-0}
NSD_PORT=5301
PORT=5310
DNSTAP_METRICS=5311
DOT_PORT=5312
DOH_PORT=5313
OUT=${OUT:-bench/results}

need=()
for cmd in dnsperf nsd unbound dnsdist dnsmasq kresd fstrm_capture h2load; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y -qq dnsperf nsd unbound dnsdist dnsmasq-base knot-resolver fstrm-bin nghttp2-client python3-matplotlib >/dev/null
  else
    echo "missing: ${need[*]} (apt-get install dnsperf nsd unbound dnsdist dnsmasq-base knot-resolver fstrm-bin nghttp2-client)" >&2
    exit 1
  fi
fi
cargo build --release --quiet --bin zonefwd --example reflector --example relay

# --- the authoritative upstream: wildcard zones --------------------------------
source bench/nsd.sh
bench_workdir
start_nsd "$work" "$NSD_PORT"

# --- the certificate of the DoT and DoH rows --------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 \
  -keyout "$work/tls.key" -out "$work/tls.pem" 2>/dev/null

# --- query files ---------------------------------------------------------------
python3 - "$work" <<'EOF'
import random, sys
w = sys.argv[1]
random.seed(7)
tag = "%08x" % random.getrandbits(32)
with open(f"{w}/hit.txt", "w") as f:
    f.writelines(f"host{i}.bench.test A\n" for i in range(100))
# The same 100 questions as DoH GET paths (RFC 8484 section 4.1: ID 0, base64url).
import base64, struct
with open(f"{w}/hit-doh.txt", "w") as f:
    for i in range(100):
        name = b"".join(bytes([len(l)]) + l for l in f"host{i}.bench.test".encode().split(b".")) + b"\0"
        msg = struct.pack(">HHHHHH", 0, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)
        f.write("/dns-query?dns=" + base64.urlsafe_b64encode(msg).decode().rstrip("=") + "\n")
with open(f"{w}/miss.txt", "w") as f:
    # More than any run sends, so no name repeats within a run.
    f.writelines(f"u{i}-{tag}.bench.test A\n" for i in range(3_000_000))
lines = []
for i in range(450_000):
    n = random.randrange(1000)
    lines.append(f"common{n}.bench.test {'A' if random.random() < 0.7 else 'AAAA'}\n")
for i in range(25_000):
    lines.append(f"m{i}-{tag}.bench.test A\n")
    lines.append(f"nx{i}-{tag}.empty.test A\n")
random.shuffle(lines)
with open(f"{w}/mixed.txt", "w") as f:
    f.writelines(lines)
EOF

# --- the servers, same routes: everything to NSD ---------------------------------
write_zonefwd_config() { # extra-server-lines extra-routes
  cat >"$work/zonefwd.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
udp_threads = $THREADS
# The per-client limit stays on (its cost is part of the figure), set above the load.
client_qps = 100000000
client_max_inflight = 100000
max_inflight = 100000
loop_detection = false
${ZONEFWD_SERVER:-}
# dnsperf's TCP clients keep 32 queries in flight per connection and lose the unread
# ones when a server closes at its per-connection limit (1000 by default, RFC 9210):
# the peers have no such limit, so neither does zonefwd here.
tcp_max_queries_per_connection = 100000000
tcp_max_lifetime = "1h"
tcp_max_pipelined = 256
# The dot and doh rows; idle otherwise.
tls_listen = ["127.0.0.1:$DOT_PORT"]
https_listen = ["127.0.0.1:$DOH_PORT"]
tls_cert = "$work/tls.pem"
tls_key = "$work/tls.key"
$1
[[route]]
name = "bench"
zones = ["."]
upstreams = ["127.0.0.1:$NSD_PORT"]
$2
EOF
}
# The peers' configs; $1 is how they reach the upstream: udp, or tcp for every query.
write_peer_configs() {
  local unbound_tcp=no dnsdist_tcp=false
  [[ $1 == tcp ]] && unbound_tcp=yes dnsdist_tcp=true
  cat >"$work/unbound.conf" <<EOF
server:
  interface: 127.0.0.1@$PORT
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
  # test. is special-use (RFC 6761): Unbound answers it NXDOMAIN itself by default.
  local-zone: "test." nodefault
  msg-cache-size: 256m
  rrset-cache-size: 256m
  num-queries-per-thread: 4096
  outgoing-range: 8192
  tcp-upstream: $unbound_tcp
  # The dot and doh rows.
  interface: 127.0.0.1@$DOT_PORT
  interface: 127.0.0.1@$DOH_PORT
  tls-port: $DOT_PORT
  https-port: $DOH_PORT
  tls-service-key: "$work/tls.key"
  tls-service-pem: "$work/tls.pem"
  http-endpoint: "/dns-query"
  incoming-num-tcp: 1024
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$NSD_PORT
EOF
  # The same, with dnstap: client and forwarder queries and responses.
  cp "$work/unbound.conf" "$work/unbound-dnstap.conf"
  cat >>"$work/unbound-dnstap.conf" <<EOF
dnstap:
  dnstap-enable: yes
  dnstap-bidirectional: yes
  dnstap-socket-path: "$work/dnstap.sock"
  dnstap-send-identity: yes
  dnstap-send-version: yes
  dnstap-log-client-query-messages: yes
  dnstap-log-client-response-messages: yes
  dnstap-log-forwarder-query-messages: yes
  dnstap-log-forwarder-response-messages: yes
EOF
cat >"$work/dnsdist.conf" <<EOF
setLocal("127.0.0.1:$PORT")
setACL({"127.0.0.0/8"})
setSecurityPollSuffix("")
newServer({address="127.0.0.1:$NSD_PORT", checkInterval=3600, tcpOnly=$dnsdist_tcp})
EOF
  # The same, with a packet cache the size of zonefwd's, and DoT and DoH listeners.
  cp "$work/dnsdist.conf" "$work/dnsdist-cache.conf"
  cat >>"$work/dnsdist-cache.conf" <<EOF
pc = newPacketCache(100000, {maxTTL=86400, minTTL=0, temporaryFailureTTL=5, staleTTL=86400})
getPool(""):setCache(pc)
addTLSLocal("127.0.0.1:$DOT_PORT", "$work/tls.pem", "$work/tls.key")
addDOHLocal("127.0.0.1:$DOH_PORT", "$work/tls.pem", "$work/tls.key", "/dns-query")
EOF
  # And with dnstap: every client query and response, from the cache too.
  cp "$work/dnsdist-cache.conf" "$work/dnsdist-cache-dnstap.conf"
  cat >>"$work/dnsdist-cache-dnstap.conf" <<EOF
tap = newFrameStreamUnixLogger("$work/dnstap.sock")
addAction(AllRule(), DnstapLogAction("dnsdist", tap))
addResponseAction(AllRule(), DnstapLogResponseAction("dnsdist", tap))
addCacheHitResponseAction(AllRule(), DnstapLogResponseAction("dnsdist", tap))
EOF
  # Knot Resolver as a forwarder: STUB sends RD=1 and does not validate (the zone is
  # unsigned and NSD serves only it), cache on.
  cat >"$work/kresd.conf" <<EOF
net.listen('127.0.0.1', $PORT, { kind = 'dns' })
trust_anchors.remove('.')
cache.size = 256 * MB
policy.add(policy.all(policy.STUB('127.0.0.1@$NSD_PORT')))
EOF
}

# configure workload: every server's config for it.
configure() {
  if [[ $1 == upstream-tcp ]]; then
    write_zonefwd_config "" 'transport = "tcp"'
    write_peer_configs tcp
  else
    write_zonefwd_config "" ""
    write_peer_configs udp
  fi
  # zonefwd-dnstap: the same, with every message type to fstrm_capture, and metrics
  # for the frames it sent and dropped.
  sed "s/^\[server\]/[server]\nmetrics = \"127.0.0.1:$DNSTAP_METRICS\"/" "$work/zonefwd.toml" >"$work/zonefwd-dnstap.toml"
  printf '[dnstap]\nsocket = "unix:%s/dnstap.sock"\n' "$work" >>"$work/zonefwd-dnstap.toml"
}

# fstrm_capture for zonefwd-dnstap: its pid in $cpid.
start_collector() {
  rm -f "$work/dnstap.sock"
  fstrm_capture -t protobuf:dnstap.Dnstap -u "$work/dnstap.sock" -w /dev/null 2>"$work/fstrm_capture.log" &
  cpid=$!
  pids+=("$cpid")
  for _ in $(seq 50); do [[ -S $work/dnstap.sock ]] && return 0; sleep 0.1; done
  echo "fstrm_capture did not start" >&2
  return 1
}

# The frames zonefwd-dnstap sent and dropped, as a note beside its row.
dnstap_frames() {
  curl -s "http://127.0.0.1:$DNSTAP_METRICS/metrics" |
    awk '/^zonefwd_dnstap_frames_total/ { sub(/.*result="/, ""); sub(/"}/, ""); printf "%s %s  ", $1, $2 }'
}

start_server() { # name -> pid in $spid
  # The previous server must be gone, or the new one's bind fails and dig would
  # still get answers from the old one.
  for _ in $(seq 50); do
    dig +time=1 +tries=1 @127.0.0.1 -p "$PORT" ns1.bench.test >/dev/null 2>&1 || break
    sleep 0.1
  done
  case $1 in
    # As the systemd unit and the container image run it.
    zonefwd) MIMALLOC_ARENA_EAGER_COMMIT=0 ./target/release/zonefwd run -c "$work/zonefwd.toml" 2>"$work/zonefwd.log" & ;;
    zonefwd-dnstap) start_collector
      MIMALLOC_ARENA_EAGER_COMMIT=0 ./target/release/zonefwd run -c "$work/zonefwd-dnstap.toml" 2>"$work/zonefwd-dnstap.log" & ;;
    baseline) MIMALLOC_ARENA_EAGER_COMMIT=0 "$BASELINE" run -c "$work/zonefwd.toml" 2>"$work/baseline.log" & ;;
    unbound) unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 & ;;
    dnsdist) dnsdist --supervised --disable-syslog -C "$work/dnsdist.conf" >"$work/dnsdist.log" 2>&1 & ;;
    dnsdist-cache) dnsdist --supervised --disable-syslog -C "$work/dnsdist-cache.conf" >"$work/dnsdist-cache.log" 2>&1 & ;;
    unbound-dnstap) start_collector
      unbound -d -c "$work/unbound-dnstap.conf" >"$work/unbound-dnstap.log" 2>&1 & ;;
    dnsdist-cache-dnstap) start_collector
      dnsdist --supervised --disable-syslog -C "$work/dnsdist-cache-dnstap.conf" >"$work/dnsdist-cache-dnstap.log" 2>&1 & ;;
    kresd) mkdir -p "$work/kresd"
           kresd -n -q -c "$work/kresd.conf" "$work/kresd" >"$work/kresd.log" 2>&1 & ;;
    reflector) ./target/release/examples/reflector "127.0.0.1:$PORT" 2>"$work/reflector.log" & ;;
    relay) ./target/release/examples/relay "127.0.0.1:$PORT" "127.0.0.1:$NSD_PORT" 2>"$work/relay.log" & ;;
    relay-ports) ./target/release/examples/relay "127.0.0.1:$PORT" "127.0.0.1:$NSD_PORT" 10 2>"$work/relay-ports.log" & ;;
    dnsmasq) dnsmasq -k -C /dev/null --port="$PORT" --listen-address=127.0.0.1 --bind-interfaces \
               --no-resolv --no-hosts --server="127.0.0.1#$NSD_PORT" --cache-size=10000 \
               --dns-forward-max=10000 --user="$(id -un)" --pid-file="$work/dnsmasq.pid" 2>"$work/dnsmasq.log" & ;;
  esac
  spid=$!
  pids+=("$spid")
  for _ in $(seq 50); do
    if dig +time=1 +tries=1 @127.0.0.1 -p "$PORT" ns1.bench.test >/dev/null 2>&1; then
      kill -0 "$spid" 2>/dev/null && return 0
      echo "$1 exited: $(tail -3 "$work/$1.log" 2>/dev/null)" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "$1 did not start" >&2
  return 1
}

cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }

# measure workload server pid -> one CSV line
measure() {
  local workload=$1 server=$2 pid=$3 file mode=udp port=$PORT extra=()
  case $workload in
    hit | tcp) file=$work/hit.txt ;;
    dot) file=$work/hit.txt mode=dot port=$DOT_PORT ;;
    doh) file=$work/hit.txt mode=doh port=$DOH_PORT ;;
    miss | upstream-tcp) file=$work/miss.txt ;;
    mixed) file=$work/mixed.txt ;;
  esac
  [[ $workload == tcp ]] && mode=tcp
  if [[ $workload != miss && $workload != upstream-tcp ]]; then
    # Warm the cache (mixed: the repeated set), as a server in service would be.
    dnsperf -s 127.0.0.1 -p "$PORT" -d "$file" -n 1 -q 50 -l 5 >/dev/null 2>&1 || true
  fi
  local before after
  before=$(cpu_seconds "$pid")
  if [[ $mode == doh ]]; then
    h2load_run "$port" "$pid" "$before"
    return
  fi
  dnsperf -s 127.0.0.1 -p "$port" -m "$mode" -d "$file" -c "$CLIENTS" -q "$OUTSTANDING" \
    -l "$DURATION" -v >"$work/out" 2>&1 || true
  after=$(cpu_seconds "$pid")
  local rss p99
  rss=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
  p99=$(awk '/^> / { print $NF }' "$work/out" | sort -n | awk '{ a[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", a[i] * 1000 }')
  awk -v w="$workload" -v s="$server" -v b="$before" -v a="$after" -v r="$rss" -v p99="$p99" '
    /Queries per second/ { q = $4 }
    /Queries lost/ { lost = $3 }
    /Queries completed/ { done = $3 }
    # The first: over TCP, DoT and DoH a second one follows for the connections.
    /Average Latency/ && !seen++ { mean = $4 * 1000 }
    END {
      cpu = a - b
      printf "%s,%s,%.0f,%.3f,%s,%s,%.2f,%.0f,%d\n", w, s, q, mean, p99, lost, cpu, (cpu > 0 ? done / cpu : 0), r
    }' "$work/out"
}

# The doh row: h2load for DURATION seconds over the 100 hit names, one CSV line like
# measure's (no p99).
h2load_run() { # port pid cpu-before
  local uris=()
  mapfile -t uris < <(sed "s#^#https://127.0.0.1:$1#" "$work/hit-doh.txt")
  h2load -c "$CLIENTS" -m 32 -D "$DURATION" "${uris[@]}" >"$work/out" 2>&1 || true
  local after rss
  after=$(cpu_seconds "$2")
  rss=$(awk '/VmHWM/ { print $2 }' "/proc/$2/status")
  awk -v s="$server" -v b="$3" -v a="$after" -v r="$rss" -v d="$DURATION" '
    /^requests:/ { done = $8; failed = $10 + $12 + $14 }
    /^time for request:/ { mean = $6; unit = mean; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", mean)
                           mean = (unit == "us" ? mean / 1000 : (unit == "s" ? mean * 1000 : mean)) }
    END {
      cpu = a - b
      printf "doh,%s,%.0f,%.3f,,%d,%.2f,%.0f,%d\n", s, done / d, mean, failed, cpu, (cpu > 0 ? done / cpu : 0), r
    }' "$work/out"
}

# skip workload server: true when the row would not mean anything. The floors each
# have one path; dnsmasq and kresd cannot be told to forward over TCP only.
skip() {
  case $1 in
    dot | doh) [[ $2 != zonefwd && $2 != unbound && $2 != dnsdist-cache && $2 != baseline ]]; return ;;
  esac
  case $2 in
    reflector) [[ $1 != hit ]] ;;
    relay | relay-ports) [[ $1 != miss ]] ;;
    dnsmasq | kresd) [[ $1 == upstream-tcp ]] ;;
    *) false ;;
  esac
}

mkdir -p "$OUT"
stamp=$(date -u +%Y-%m-%d)
csv="$OUT/$stamp.csv"
echo "workload,server,qps,mean_ms,p99_ms,lost,cpu_s,queries_per_cpu_s,peak_rss_kib" >"$csv"
sleep 0.5
for workload in $WORKLOADS; do
  configure "$workload"
  for server in $SERVERS; do
    skip "$workload" "$server" && continue
    start_server "$server"
    line=$(measure "$workload" "$server" "$spid")
    echo "$line" | tee -a "$csv"
    [[ $server == zonefwd-dnstap ]] && echo "  dnstap frames: $(dnstap_frames)" | tee -a "$OUT/$stamp-dnstap.txt"
    kill "$spid"
    wait "$spid" 2>/dev/null || true
    if [[ -n ${cpid:-} ]]; then
      kill "$cpid"; wait "$cpid" 2>/dev/null || true; cpid=
    fi
    sleep 0.5
  done
done

if [[ $SCALE == 1 ]]; then
  scsv="$OUT/$stamp-scale.csv"
  echo "dimension,size,queries_per_cpu_s,peak_rss_kib,qps" >"$scsv"
  # Cache size: fill N entries, then answer a random stream over all of them.
  for n in 10000 100000 1000000; do
    write_zonefwd_config "" ""
    sed -i "s/^\[server\]/[cache]\nmax_entries = $n\n[server]/" "$work/zonefwd.toml"
    seq 0 $((n - 1)) | awk '{ print "c" $1 ".bench.test A" }' >"$work/fill.txt"
    shuf "$work/fill.txt" >"$work/scale.txt"
    start_server zonefwd
    dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/fill.txt" -n 1 -c "$CLIENTS" -q "$OUTSTANDING" >/dev/null 2>&1 || true
    before=$(cpu_seconds "$spid")
    dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/scale.txt" -c "$CLIENTS" -q "$OUTSTANDING" -l "$DURATION" >"$work/out" 2>&1 || true
    after=$(cpu_seconds "$spid")
    rss=$(awk '/VmHWM/ { print $2 }' "/proc/$spid/status")
    awk -v n="$n" -v b="$before" -v a="$after" -v r="$rss" '/Queries completed/ { d = $3 } /Queries per second/ { q = $4 }
      END { printf "cache_entries,%d,%.0f,%d,%.0f\n", n, d / (a - b), r, q }' "$work/out" | tee -a "$scsv"
    kill "$spid"; wait "$spid" 2>/dev/null || true
  done
  # Zones: N routes' worth of zones (one route, N zones, plus N-1 other routes of one
  # zone each would change nothing in the lookup), cache-hit workload on the root route.
  for n in 10 1000 10000; do
    zones=$(seq 1 "$n" | awk '{ printf "%s\"z%d.corp%d.example\"", (NR > 1 ? ", " : ""), $1, $1 % 97 }')
    write_zonefwd_config "" "[[route]]
name = \"many\"
zones = [$zones]
upstreams = [\"127.0.0.1:$NSD_PORT\"]"
    start_server zonefwd
    line=$(measure hit zonefwd "$spid")
    echo "$line" | awk -F, -v n="$n" '{ printf "zones,%d,%s,%s,%s\n", n, $8, $9, $3 }' | tee -a "$scsv"
    kill "$spid"; wait "$spid" 2>/dev/null || true
  done
fi

if [[ $LATENCY == 1 ]]; then
  # Added latency at low load: 1,000 qps from one client for 20 s, the upstream asked
  # directly and through the server, p50 and p99 of each (dnsperf -v prints every
  # query's round trip). A miss is compared with NSD asked the same unique names, a
  # hit with NSD asked the same repeated names; the floor for each path (relay,
  # reflector) is measured the same way, for what any server adds on this machine.
  lcsv="$OUT/$stamp-latency.csv"
  echo "path,server,direct_p50_us,direct_p99_us,p50_us,p99_us,added_p50_us,added_p99_us" >"$lcsv"
  low_load() { # port file -> "p50 p99" in microseconds
    dnsperf -s 127.0.0.1 -p "$1" -d "$2" -c 1 -Q 1000 -l 20 -v >"$work/lat.out" 2>&1 || true
    awk '/^> / { print $NF }' "$work/lat.out" | sort -n |
      awk '{ a[NR] = $1 } END { printf "%.1f %.1f\n", a[int(NR * 0.5)] * 1e6, a[int(NR * 0.99)] * 1e6 }'
  }
  configure miss
  # Names no earlier run reached, a different 100,000 for each server.
  awk 'NR > 2800000 && NR <= 2900000' "$work/miss.txt" >"$work/miss-low-zonefwd.txt"
  awk 'NR > 2900000' "$work/miss.txt" >"$work/miss-low-relay.txt"
  for row in "miss zonefwd" "miss relay" "hit zonefwd" "hit reflector"; do
    read -r path server <<<"$row"
    file=$work/hit.txt
    [[ $path == miss ]] && file=$work/miss-low-$server.txt
    read -r d50 d99 < <(low_load "$NSD_PORT" "$file")
    start_server "$server"
    [[ $path == hit ]] && dnsperf -s 127.0.0.1 -p "$PORT" -d "$file" -n 1 -q 50 -l 5 >/dev/null 2>&1
    read -r z50 z99 < <(low_load "$PORT" "$file")
    kill "$spid"; wait "$spid" 2>/dev/null || true
    awk -v p="$path" -v s="$server" -v d50="$d50" -v d99="$d99" -v z50="$z50" -v z99="$z99" \
      'BEGIN { printf "%s,%s,%s,%s,%s,%s,%.1f,%.1f\n", p, s, d50, d99, z50, z99, z50 - d50, z99 - d99 }' | tee -a "$lcsv"
  done
fi

versions="$(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)); THREADS=$THREADS; dnsperf -c $CLIENTS -q $OUTSTANDING -l $DURATION; zonefwd $(./target/release/zonefwd --version | cut -d' ' -f2), $(dnsdist --version 2>/dev/null | awk 'NR == 1' | cut -d' ' -f1-2), unbound $(unbound -V | awk 'NR == 1 { print $2 }'), $(dnsmasq --version | awk 'NR == 1' | cut -d' ' -f1-3), $(nsd -v 2>&1 | awk 'NR == 1')"
# Debian's python3-matplotlib is for the system interpreter; a pyenv or venv python3
# earlier in PATH does not see it.
chart_python=/usr/bin/python3
[[ -x $chart_python ]] || chart_python=python3
"$chart_python" bench/chart.py "$csv" "$versions"
echo "$versions"
