#!/usr/bin/env bash
# What can be checked of the container image without a container engine (none runs on
# the CI machine):
#  1. the Dockerfile's runtime stage agrees with what the binary expects: a non-root
#     numeric USER, the config where the binary looks for it, EXPOSE matching the
#     baked-in config's port, a HEALTHCHECK through `zonefwd healthcheck`, and the file
#     capability that lets a non-root user bind port 53;
#  2. the image's runtime conditions, emulated: the release binary with that file
#     capability, run as uid 65532 with every other capability dropped, binds port 53
#     with the baked-in config (on loopback here), serves, and passes its healthcheck.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "container-check: $*" >&2; exit 1; }

df=Dockerfile
runtime=$(awk '/^FROM /{stage++} stage==2' "$df")
[[ -n "$runtime" ]] || fail "no runtime stage (a second FROM) in $df"
user=$(awk '/^USER /{print $2}' <<<"$runtime" | tail -1)
[[ "$user" =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] || fail "runtime USER must be a numeric non-root uid, got '${user:-none}'"
grep -q '^COPY config/container.toml /etc/zonefwd/zonefwd.toml$' <<<"$runtime" || fail "the config must be copied to /etc/zonefwd/zonefwd.toml"
grep -q 'pub const DEFAULT_PATH: &str = "/etc/zonefwd/zonefwd.toml";' src/config/types.rs || fail "the binary's default config path moved"
grep -q '^ENV ZONEFWD_CONFIG=/etc/zonefwd/zonefwd.toml$' <<<"$runtime" || fail "ZONEFWD_CONFIG must name the copied config"
grep -qE '^ENV ZONEFWD_CONTROL=/tmp/' <<<"$runtime" || fail "ZONEFWD_CONTROL must name a control socket the image's user can create (under /tmp), so ctl works whatever the mounted file says"
# The image's environment, as the runtime stage's ENV lines set it (KEY=VALUE form).
image_env=()
while read -r _ kv; do image_env+=("$kv"); done < <(grep -E '^ENV [A-Z_]+=' <<<"$runtime")
port=$(grep -oE 'listen = \["[0-9.]+:([0-9]+)"\]' config/container.toml | grep -oE ':[0-9]+"' | tr -d ':"')
for proto in udp tcp; do
  grep -qE "^EXPOSE .*\b$port/$proto\b" <<<"$runtime" || fail "EXPOSE lacks $port/$proto (the port config/container.toml listens on)"
done
grep -q 'CMD \["/usr/local/bin/zonefwd", "healthcheck"\]' <<<"$runtime" || fail "HEALTHCHECK must run zonefwd healthcheck"
grep -q 'setcap cap_net_bind_service=+ep /usr/local/bin/zonefwd' <<<"$runtime" \
  || fail "the runtime stage must give the binary cap_net_bind_service as a file capability (in a RUN: COPY --from may drop it)"
echo "container-check: Dockerfile runtime stage agrees with the binary (USER $user, port $port)"

if [[ $(id -u) != 0 ]]; then
  echo "container-check: not root, skipping the runtime emulation"
  exit 0
fi
for cmd in setcap setpriv; do
  command -v "$cmd" >/dev/null || { apt-get update -qq && apt-get install -y -qq libcap2-bin util-linux >/dev/null; }
done
cargo build --release --locked --quiet
work=$(mktemp -d)
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
chmod 755 "$work"
install -m 0755 target/release/zonefwd "$work/zonefwd"
setcap cap_net_bind_service=+ep "$work/zonefwd"
# The baked-in config, on loopback rather than every address of the CI machine, and
# without its control key: a mounted file that names no socket (ctl must still work
# through the image's ZONEFWD_CONTROL).
sed -e "s/0\.0\.0\.0:$port/127.0.0.1:$port/" -e '/^control = /d' config/container.toml >"$work/zonefwd.toml"
chmod 644 "$work/zonefwd.toml"
as_image_user=(setpriv --reuid="${user%%:*}" --regid="${user##*:}" --clear-groups --inh-caps=-all --bounding-set=-all,+net_bind_service)
"${as_image_user[@]}" env "${image_env[@]}" ZONEFWD_CONFIG="$work/zonefwd.toml" RUST_LOG=warn "$work/zonefwd" run &
pid=$!
for _ in $(seq 1 50); do
  "${as_image_user[@]}" env "${image_env[@]}" ZONEFWD_CONFIG="$work/zonefwd.toml" "$work/zonefwd" healthcheck --timeout 200ms >/dev/null 2>&1 && break
  sleep 0.1
done
"${as_image_user[@]}" env "${image_env[@]}" ZONEFWD_CONFIG="$work/zonefwd.toml" "$work/zonefwd" healthcheck
# docker exec CONTAINER zonefwd ctl status: the image's environment alone finds the socket.
"${as_image_user[@]}" env "${image_env[@]}" ZONEFWD_CONFIG="$work/zonefwd.toml" "$work/zonefwd" ctl status >/dev/null \
  || fail "zonefwd ctl status does not reach the server in the image's environment"
uid=$(awk '/^Uid:/{print $3}' "/proc/$pid/status")
capeff=$(awk '/^CapEff:/{print $2}' "/proc/$pid/status")
[[ "$uid" == "${user%%:*}" ]] || fail "running as uid $uid, not ${user%%:*}"
# CAP_NET_BIND_SERVICE is capability 10: exactly 0x400.
[[ $((16#$capeff)) == $((1 << 10)) ]] || fail "effective capabilities $capeff, expected only CAP_NET_BIND_SERVICE (0000000000000400)"
echo "container-check: serves port $port as uid $uid with only CAP_NET_BIND_SERVICE (CapEff $capeff)"
