#!/usr/bin/env bash
# Port 53 on a VM that runs systemd-resolved's stub: in a network namespace of its own
# (loopback, and a veth with 10.0.0.4/24 standing for the VM's address), a program
# named systemd-resolve holds 127.0.0.53:53 on UDP and TCP as resolved opens it
# (SO_REUSEADDR). Then:
#   - `listen = ["0.0.0.0:53"]` fails to start, naming systemd-resolve and its pid and
#     saying the fix (the host's own addresses, or DNSStubListener=no);
#   - `doctor` fails its listen check with the same;
#   - every VM configuration the README and config/ document starts beside it and
#     answers its healthcheck (upstreams replaced by loopback: nothing is sent out).
# Exits 77, saying why, where the machine does not allow it (not root, no network
# namespaces, no python3): skipped, never passed.
#   ZONEFWD=target/debug/zonefwd bash tests/port53.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ZONEFWD=$(realpath "${ZONEFWD:-target/debug/zonefwd}")
skip() { echo "skipped: $*" >&2; exit 77; }
fail() { echo "port53: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || skip "network namespaces need root"
command -v ip >/dev/null || skip "no ip (iproute2)"
command -v python3 >/dev/null || skip "no python3"

ns="zfp$$"
work=$(mktemp -d)
pids=()
cleanup() {
  # Everything left in the namespace, whoever started it.
  for p in $(ip netns pids "$ns" 2>/dev/null) "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns" 2>"$work/err" || skip "this machine does not allow network namespaces: $(cat "$work/err")"
# Not for a command put in the background: $! would be a subshell's, not the command's.
in_ns() { ip netns exec "$ns" "$@"; }
ip -n "$ns" link set lo up
ip -n "$ns" link add v0 type veth peer name v1
ip -n "$ns" addr add 10.0.0.4/24 dev v0
# The jump-subnet example's address (config/jump-subnet.toml).
ip -n "$ns" addr add 10.20.0.4/24 dev v0
ip -n "$ns" link set v0 up
ip -n "$ns" link set v1 up

# resolved's stub, as it opens its sockets, under its command name.
ip netns exec "$ns" python3 -c '
import ctypes, os, socket, sys, time
ctypes.CDLL(None).prctl(15, b"systemd-resolve", 0, 0, 0)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
u.bind(("127.0.0.53", 53))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.53", 53))
t.listen(16)
print("holding", os.getpid(), flush=True)
time.sleep(600)
' >"$work/stub.out" &
pids+=($!)
for _ in $(seq 50); do grep -q holding "$work/stub.out" 2>/dev/null && break; sleep 0.1; done
grep -q holding "$work/stub.out" || fail "the stand-in for resolved's stub did not start"
stub=$(awk '/holding/ { print $2 }' "$work/stub.out")

route='[[route]]
name = "all"
zones = ["."]
upstreams = ["127.0.0.1:9"]'
printf '[server]\nlisten = ["0.0.0.0:53"]\nloop_detection = false\n%s\n' "$route" >"$work/wildcard.toml"

# 1. The start fails, and says who holds the port and what to do.
if in_ns "$ZONEFWD" run -c "$work/wildcard.toml" 2>"$work/run.err"; then
  fail "listen 0.0.0.0:53 started beside 127.0.0.53:53"
fi
for says in "systemd-resolve (pid $stub) on 127.0.0.53:53" "DNSStubListener=no" "this host's own addresses"; do
  grep -qF "$says" "$work/run.err" || fail "the start error does not say \"$says\": $(cat "$work/run.err")"
done
echo "port53: the start error: $(cat "$work/run.err")"

# 2. doctor fails the listen check, with the same.
if in_ns "$ZONEFWD" doctor -c "$work/wildcard.toml" --as-user root >"$work/doctor.out" 2>&1; then
  fail "doctor passed: $(cat "$work/doctor.out")"
fi
grep -qF "FAIL listen 0.0.0.0:53: in use by systemd-resolve (pid $stub)" "$work/doctor.out" \
  || fail "doctor does not name the holder: $(cat "$work/doctor.out")"
grep -A1 'FAIL listen' "$work/doctor.out" | grep -qF "DNSStubListener=no" || fail "doctor gives no fix: $(cat "$work/doctor.out")"
grep -F 'listen 0.0.0.0:53' -A1 "$work/doctor.out"

# 3. Every documented VM configuration starts beside the stub: the README's TOML blocks
# that set listen, and config/azure.toml; upstreams to loopback (tls:// ones stay
# tls://), and the jump-subnet example's certificate, key and CA made here.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=dns.test -addext subjectAltName=DNS:dns.test \
  -keyout "$work/tls.key" -out "$work/tls.pem" 2>/dev/null || fail "openssl made no certificate"
python3 - "$work" <<'PY'
import re, sys
work = sys.argv[1]
readme = open("README.md").read()
blocks = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if re.search(r"^listen = ", b, re.M)]
blocks.append(open("config/azure.toml").read())
assert len(blocks) >= 3, f"expected the README's VM configurations, found {len(blocks)}"
for i, b in enumerate(blocks):
    loopback = lambda m: 'upstreams = ["tls://127.0.0.1:9#dns.test"]' if "tls://" in m.group(0) else 'upstreams = ["127.0.0.1:9"]'
    b = re.sub(r'upstreams = \[[^\]]*\]', loopback, b)
    b = b.replace("/etc/zonefwd/tls/fullchain.pem", f"{work}/tls.pem").replace("/etc/zonefwd/corp-ca.pem", f"{work}/tls.pem")
    b = b.replace("/etc/zonefwd/tls/key.pem", f"{work}/tls.key")
    b = b.replace("[server]\n", "[server]\nloop_detection = false\n", 1)
    open(f"{work}/documented-{i}.toml", "w").write(b)
PY
for f in "$work"/documented-*.toml; do
  ip netns exec "$ns" "$ZONEFWD" run -c "$f" 2>"$f.log" &
  pid=$!
  pids+=("$pid")
  ok=
  for _ in $(seq 50); do
    if in_ns "$ZONEFWD" healthcheck -c "$f" --timeout 200ms >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n $ok ]] || fail "$(grep -m1 '^listen' "$f") does not start beside resolved's stub: $(cat "$f.log")"
  echo "port53: starts beside the stub: $(grep -m1 '^listen' "$f")"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
echo "port53: ok"
