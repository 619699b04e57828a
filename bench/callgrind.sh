#!/usr/bin/env bash
# User-space instructions per forwarded query and per cache hit, counted by callgrind
# (repeatable where seconds are not). zonefwd runs under callgrind with one UDP thread
# against NSD on loopback; dnsperf sends N unique names (each a cache miss, so each is
# forwarded) and then the same N names again (each a cache hit). The counters are
# zeroed before the first phase and dumped after each (callgrind_control), so startup
# and teardown are not counted; the figure is every thread's instructions in a phase
# divided by the queries answered in it.
#
#   bash bench/callgrind.sh                 # the build in target/release
#   BIN=/tmp/zonefwd-before bash bench/callgrind.sh   # another build, same harness
#   N=20000 RUNS=3 bash bench/callgrind.sh  # queries per phase, runs (median reported)
#   OUTSTANDING=1 bash bench/callgrind.sh   # one query at a time (default 20 in flight)
#   KEEP=/tmp/cg RUNS=1 bash bench/callgrind.sh  # keep the dumps for callgrind_annotate
#   MODE=tcp bash bench/callgrind.sh        # the client queries over TCP (kept connections)
#   DNSTAP=1 bash bench/callgrind.sh        # with [dnstap]: all four message types to
#                                           # fstrm_capture on a Unix socket (to /dev/null)
#
# Needs (Debian): valgrind dnsperf nsd (and fstrm-bin for DNSTAP=1). Everything listens
# on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20000}
RUNS=${RUNS:-3}
OUTSTANDING=${OUTSTANDING:-20}
MODE=${MODE:-udp}
BIN=${BIN:-target/release/zonefwd}
NSD_PORT=5321
PORT=5320

for cmd in valgrind callgrind_control dnsperf nsd; do
  command -v "$cmd" >/dev/null || { echo "missing $cmd (apt-get install valgrind dnsperf nsd)" >&2; exit 1; }
done
[[ $BIN != target/release/zonefwd ]] || cargo build --release --quiet

source bench/nsd.sh
bench_workdir
start_nsd "$work" "$NSD_PORT"
for _ in $(seq 50); do
  dig +time=1 +tries=1 @127.0.0.1 -p "$NSD_PORT" ns1.bench.test >/dev/null 2>&1 && break
  sleep 0.1
done
dig +time=1 +tries=1 @127.0.0.1 -p "$NSD_PORT" ns1.bench.test >/dev/null 2>&1 \
  || { echo "NSD does not answer on port $NSD_PORT (is another run holding it?)" >&2; exit 1; }

cat >"$work/zonefwd.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
udp_threads = 1
client_qps = 100000000
client_max_inflight = 100000
max_inflight = 100000
loop_detection = false
[[route]]
name = "bench"
zones = ["."]
upstreams = ["127.0.0.1:$NSD_PORT"]
EOF
if [[ ${DNSTAP:-0} == 1 ]]; then
  command -v fstrm_capture >/dev/null || { echo "missing fstrm_capture (apt-get install fstrm-bin)" >&2; exit 1; }
  fstrm_capture -t protobuf:dnstap.Dnstap -u "$work/dnstap.sock" -w /dev/null 2>"$work/fstrm_capture.log" &
  pids+=($!)
  for _ in $(seq 50); do [[ -S $work/dnstap.sock ]] && break; sleep 0.1; done
  printf '[dnstap]\nsocket = "unix:%s/dnstap.sock"\n' "$work" >>"$work/zonefwd.toml"
fi

# count phase -> the instructions in the dump that phase triggered (every thread)
count() {
  grep -l "^desc: Trigger: dump $1\$" "$work"/callgrind.out.* | xargs awk '/^summary:/ { s += $2 } END { print s }'
}

one_run() {
  local run=$1 tag
  tag=$(printf 'r%s%05d' "$run" $RANDOM)
  seq 0 $((N - 1)) | awk -v t="$tag" '{ print t "-" $1 ".bench.test A" }' >"$work/names.txt"
  rm -f "$work"/callgrind.out.*
  MIMALLOC_ARENA_EAGER_COMMIT=0 valgrind --tool=callgrind --separate-threads=no \
    --callgrind-out-file="$work/callgrind.out.%p" "$BIN" run -c "$work/zonefwd.toml" \
    2>"$work/zonefwd.log" &
  local vpid=$!
  pids+=("$vpid")
  local up=0
  for _ in $(seq 300); do
    kill -0 "$vpid" 2>/dev/null || break
    dig +time=1 +tries=1 @127.0.0.1 -p "$PORT" ns1.bench.test >/dev/null 2>&1 && { up=1; break; }
    sleep 0.2
  done
  if ((!up)); then
    echo "zonefwd did not start: $(grep -v '^==' "$work/zonefwd.log" | tail -2)" >&2
    return 1
  fi
  callgrind_control -z "$vpid" >/dev/null
  # At a rate valgrind keeps up with, so nothing is lost or retried.
  dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/names.txt" -m "$MODE" -n 1 -q "$OUTSTANDING" -Q 2000 -t 10 >"$work/miss.out" 2>&1
  callgrind_control -d miss "$vpid" >/dev/null
  dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/names.txt" -m "$MODE" -n 1 -q "$OUTSTANDING" -Q 2000 -t 10 >"$work/hit.out" 2>&1
  callgrind_control -d hit "$vpid" >/dev/null
  kill "$vpid"
  wait "$vpid" 2>/dev/null || true
  # KEEP=DIR keeps the dumps, for callgrind_annotate (the miss phase's file says
  # "Trigger: dump miss").
  [[ -z ${KEEP:-} ]] || { mkdir -p "$KEEP"; cp "$work"/callgrind.out.* "$KEEP"/; }
  local miss_done hit_done
  miss_done=$(awk '/Queries completed/ { print $3 }' "$work/miss.out")
  hit_done=$(awk '/Queries completed/ { print $3 }' "$work/hit.out")
  # A lost query would be retried or waited out: its cost is not a query's.
  if [[ $miss_done != "$N" || $hit_done != "$N" ]]; then
    echo "run $run: answered $miss_done and $hit_done of $N; not counted" >&2
    return 1
  fi
  echo "$(($(count miss) / miss_done)) $(($(count hit) / hit_done)) $miss_done $hit_done"
}

results=()
for run in $(seq "$RUNS"); do
  line=$(one_run "$run")
  echo "run $run: instructions per forwarded query, per cache hit, queries answered: $line" >&2
  results+=("$line")
done
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
miss=$(printf '%s\n' "${results[@]}" | awk '{ print $1 }' | median)
hit=$(printf '%s\n' "${results[@]}" | awk '{ print $2 }' | median)
echo "instructions per forwarded query: $miss; per cache hit: $hit (median of $RUNS, N=$N, $OUTSTANDING outstanding over $MODE, $BIN)"
