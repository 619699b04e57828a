# What both bench scripts share, sourced, not run:
#   source bench/nsd.sh
#   bench_workdir                    # $work, the $pids array, and their cleanup at exit
#   start_nsd "$work" "$NSD_PORT"    # the upstream; appends NSD's pid to pids
#   start_zonefwd [prlimit args]     # the release build on $work/zonefwd.toml; $zpid
# The upstream is NSD on loopback with a wildcard zone (bench.test: every name has an
# A and an AAAA record) and an empty one (empty.test: every name is NXDOMAIN).

bench_workdir() {
  work=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# The release build with $work/zonefwd.toml (under `prlimit ARGS` when given), its log
# in $work/zonefwd.log, its pid in $zpid (and pids); returns once it answers on $PORT
# (NSD's ns1.bench.test, through it), and exits the script if it never does.
start_zonefwd() { # [prlimit args]
  local run=(./target/release/zonefwd run -c "$work/zonefwd.toml")
  (($#)) && run=(prlimit "$@" "${run[@]}")
  MIMALLOC_ARENA_EAGER_COMMIT=0 "${run[@]}" 2>"$work/zonefwd.log" &
  zpid=$!
  pids+=("$zpid")
  for _ in $(seq 50); do
    dig +time=1 +tries=1 @127.0.0.1 -p "$PORT" ns1.bench.test >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "zonefwd did not start: $(tail -2 "$work/zonefwd.log")" >&2
  exit 1
}

start_nsd() { # work-dir port
  local work=$1 NSD_PORT=$2
  cat >"$work/bench.zone" <<'EOF'
$ORIGIN bench.test.
$TTL 3600
@   IN SOA ns1 hostmaster 1 3600 600 86400 300
@   IN NS  ns1
ns1 IN A   127.0.0.1
*   IN A   192.0.2.1
*   IN AAAA 2001:db8::1
; About 1 KiB of TXT for every name: large answers (bench/exhaustion.sh fills the cache
; with them); the other benchmarks ask A and AAAA only.
*   IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc" "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
EOF
  cat >"$work/empty.zone" <<'EOF'
$ORIGIN empty.test.
$TTL 3600
@   IN SOA ns1 hostmaster 1 3600 600 86400 300
@   IN NS  ns1
ns1 IN A   127.0.0.1
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
  # Debian's NSD limits responses to 200/s per client network (RRL): off here.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
# No control port: two NSDs (two bench scripts at once) would both want ::1@8952.
remote-control:
  control-enable: no
zone:
  name: bench.test
  zonefile: bench.zone
zone:
  name: empty.test
  zonefile: empty.zone
EOF
  nsd -d -c "$work/nsd.conf" >"$work/nsd.log" 2>&1 &
  pids+=($!)
}
