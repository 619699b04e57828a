#!/usr/bin/env bash
# The Debian package as a VM's administrator meets it: built with cargo-deb, installed
# with dpkg -i on this machine, every file where the unit and the README say, the unit
# enabled and verified, the installed configuration passing `zonefwd check`, lintian
# clean but for the overrides the package ships (each with its reason), and after
# `dpkg --purge` nothing left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "deb-check: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "deb-check: needs root (dpkg -i); skipped"; exit 0; }
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
command -v lintian >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian >/dev/null
}
dpkg -s zonefwd >/dev/null 2>&1 && fail "a zonefwd package is installed already; this check installs and purges its own"

deb=$(bash debian/package.sh | tail -1)
[[ -f $deb ]] || deb=$(ls -t target/debian/zonefwd_*.deb | head -1)
echo "deb-check: built $deb"

# lintian: errors and warnings fail; the package's own overrides say why each is there.
lintian --fail-on error,warning --info "$deb" || fail "lintian"

dpkg -i "$deb" >/dev/null
trap 'dpkg --purge zonefwd >/dev/null 2>&1 || true' EXIT
unit=$(dpkg -L zonefwd | grep -E '/systemd/system/zonefwd\.service$' || true)
[[ -n $unit ]] || fail "no zonefwd.service installed"
for f in /usr/bin/zonefwd /etc/zonefwd/zonefwd.toml /usr/share/doc/zonefwd/README.md \
  /usr/share/doc/zonefwd/examples/reference.toml /usr/share/doc/zonefwd/examples/azure.toml \
  /usr/share/doc/zonefwd/examples/jump-subnet.toml /usr/share/doc/zonefwd/docs/encrypted-dns.md \
  /usr/share/man/man8/zonefwd.8.gz /usr/share/man/man5/zonefwd.toml.5.gz \
  /usr/share/bash-completion/completions/zonefwd /usr/share/zsh/vendor-completions/_zonefwd \
  /usr/share/fish/vendor_completions.d/zonefwd.fish "$unit"; do
  [[ -e $f ]] || fail "$f is not installed"
done
# Every manual page renders without a warning from groff (man -l), and zonefwd(8)
# names every command's page.
command -v man >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends man-db groff-base >/dev/null
}
pages=$(dpkg -L zonefwd | grep -E '^/usr/share/man/man[58]/.*\.gz$')
(($(wc -l <<<"$pages") >= 10)) || fail "too few manual pages: $pages"
for page in $pages; do
  warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
  [[ -z $warnings ]] || fail "man -l $page: $warnings"
done
for cmd in run check doctor ctl query onprem-forwarders import-route53-rules; do
  grep -q "^/usr/share/man/man8/zonefwd-$cmd.8.gz$" <<<"$pages" || fail "no zonefwd-$cmd(8)"
done
for key in upstream_udp_reuse tls_listen tls_insecure_no_verify; do
  man -l /usr/share/man/man5/zonefwd.toml.5.gz | grep -q "$key" \
    || fail "zonefwd.toml(5) lacks $key, a key of config/reference.toml"
done
bash -c 'source /usr/share/bash-completion/completions/zonefwd && complete -p zonefwd' >/dev/null \
  || fail "the bash completion does not load"
# The unit runs the binary where the package put it.
grep -q '^ExecStart=/usr/bin/zonefwd run --config /etc/zonefwd/zonefwd.toml$' "$unit" \
  || fail "$unit does not run /usr/bin/zonefwd with /etc/zonefwd/zonefwd.toml"
dpkg-query -W -f='${Conffiles}\n' zonefwd | grep -q '^ /etc/zonefwd/zonefwd.toml ' \
  || fail "/etc/zonefwd/zonefwd.toml is not a conffile"
[[ -L /etc/systemd/system/multi-user.target.wants/zonefwd.service ]] \
  || fail "the unit is not enabled (no multi-user.target.wants link)"
systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
/usr/bin/zonefwd check --config /etc/zonefwd/zonefwd.toml | head -1

dpkg --purge zonefwd >/dev/null
trap - EXIT
left=()
for f in /usr/bin/zonefwd /etc/zonefwd "$unit" /usr/share/doc/zonefwd \
  /etc/systemd/system/multi-user.target.wants/zonefwd.service /var/lib/systemd/deb-systemd-helper-enabled/zonefwd.service; do
  [[ -e $f || -L $f ]] && left+=("$f")
done
((${#left[@]} == 0)) || fail "left behind after purge: ${left[*]}"
dpkg -s zonefwd >/dev/null 2>&1 && fail "dpkg still knows the package after purge"
echo "deb-check: installs where the unit and README say, enabled, verified, checked; purged clean"
