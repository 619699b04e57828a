#!/usr/bin/env bash
# The monitoring pack against the metrics zonefwd really exports:
#  1. promtool check rules and promtool test rules (each alert fires on synthetic
#     series and stays silent on healthy ones), and the PrometheusRule for
#     prometheus-operator regenerated from the same file;
#  2. a real Prometheus on loopback scrapes a running zonefwd that has answered
#     queries (hits, misses, SERVFAIL from a dead upstream, a route with max_qps, a
#     dnstap collector that is absent, a DoT listener with its certificate) and
#     evaluates the rules; then every dashboard panel expression and every rule
#     expression is run through the query API: none may fail, every panel must return
#     data, and every series a rule or panel names must exist. A metric renamed in
#     zonefwd and not in the pack fails here. The dashboard reads raw series only,
#     so it works where the recording rules are not loaded.
#   bash .ci/monitoring-check.sh [ZONEFWD_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "monitoring-check: $*" >&2; exit 1; }
bin=$(realpath "${1:-./target/debug/zonefwd}")
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v dnsmasq >/dev/null || [[ -x /usr/sbin/dnsmasq ]] || need+=(dnsmasq-base)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
PATH=$PATH:/usr/sbin
rules=deploy/prometheus/zonefwd.rules.yml
promtool check rules "$rules"
# The prometheus-operator PrometheusRule carries the same rules: regenerated, it must
# not differ from the committed one.
fresh=$(mktemp)
python3 deploy/prometheus/operator/generate.py "$fresh"
diff -u deploy/prometheus/operator/prometheusrule.yaml "$fresh" \
  || fail "operator/prometheusrule.yaml is not what generate.py makes of $rules: rerun it"
(cd deploy/prometheus && promtool test rules zonefwd.rules.test.yml)
# The operator kustomization labels what it applies for the Prometheus that selects
# on release=PROMETHEUS_RELEASE (params.env), and applies nothing else.
rendered=$(mktemp)
kubectl kustomize deploy/prometheus/operator >"$rendered" || fail "deploy/prometheus/operator does not render"
release=$(sed -n 's/^PROMETHEUS_RELEASE=//p' deploy/prometheus/operator/params.env)
python3 - "$release" "$rendered" <<'PY' || fail "deploy/prometheus/operator: see above"
import sys, yaml
release = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
kinds = sorted(d["kind"] for d in docs)
if kinds != ["PrometheusRule", "Service", "ServiceMonitor"]:
    sys.exit(f"renders {kinds}: expected the metrics Service, the ServiceMonitor and the PrometheusRule only")
for d in docs:
    if d["kind"] != "Service" and d["metadata"].get("labels", {}).get("release") != release:
        sys.exit(f"{d['kind']} is not labelled release={release} (params.env)")
PY

work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
UP=5397 DNS=5396 DOT=5393 METRICS=9253 PROM=9290
# The upstream: dnsmasq answering every name itself, sending nothing anywhere.
dnsmasq -k -C /dev/null --port="$UP" --listen-address=127.0.0.1 --bind-interfaces \
  --no-resolv --no-hosts --address=/#/192.0.2.1 --user="$(id -un)" \
  --pid-file="$work/dnsmasq.pid" 2>"$work/dnsmasq.log" &
pids+=($!)
# The DoT listener's certificate: its validity series exist.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
  -subj /CN=dns.test -addext subjectAltName=DNS:dns.test \
  -keyout "$work/tls.key" -out "$work/tls.pem" 2>/dev/null
cat >"$work/zonefwd.toml" <<TOML
[server]
listen = ["127.0.0.1:$DNS"]
metrics = "127.0.0.1:$METRICS"
tls_listen = ["127.0.0.1:$DOT"]
tls_cert = "$work/tls.pem"
tls_key = "$work/tls.key"
loop_detection = false
[[route]]
name = "cloud"
zones = ["cloud.test."]
upstreams = ["127.0.0.1:$UP"]
max_qps = 900
expect_private = "warn"
[[route]]
name = "dead"
zones = ["dead.test."]
# Nothing listens here: every query times out, and the upstream is marked down.
upstreams = ["127.0.0.1:5395"]
timeout = "300ms"
try_timeout = "100ms"
health_check = "1h"
[[route]]
name = "tls"
zones = ["tls.test."]
# A DNS-over-TLS upstream nothing listens on: its handshake series exist.
upstreams = ["tls://127.0.0.1:5394"]
tls_insecure_no_verify = true
timeout = "300ms"
try_timeout = "100ms"
health_check = "1h"
[[route]]
name = "default"
zones = ["."]
upstreams = ["127.0.0.1:$UP"]
# A collector that is not there: the dnstap series exist, connected 0.
[dnstap]
socket = "unix:$work/absent-collector.sock"
TOML
"$bin" run -c "$work/zonefwd.toml" 2>"$work/zonefwd.log" &
pids+=($!)
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/$rules
scrape_configs:
  - job_name: zonefwd
    static_configs:
      - targets: ["127.0.0.1:$METRICS"]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$PROM" >"$work/prometheus.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do
  dig +time=1 +tries=1 @127.0.0.1 -p "$DNS" ready.cloud.test >/dev/null 2>&1 && break
  sleep 0.1
done
# Queries over a few seconds, so rates have samples on both sides: misses and hits
# on two routes, and SERVFAIL from the dead one.
for round in $(seq 6); do
  for i in $(seq 20); do
    dig +time=1 +tries=1 @127.0.0.1 -p "$DNS" "n$i.cloud.test" >/dev/null 2>&1 || true
    dig +time=1 +tries=1 @127.0.0.1 -p "$DNS" "n$round-$i.example" >/dev/null 2>&1 || true
  done
  dig +time=1 +tries=1 @127.0.0.1 -p "$DNS" "x$round.dead.test" >/dev/null 2>&1 || true
  sleep 1
done
sleep 3

python3 - "$PROM" "$rules" deploy/grafana/zonefwd.json <<'PY'
import json, re, sys, urllib.parse, urllib.request
port, rules_file, dashboard_file = sys.argv[1:]
import yaml

def query(expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    if body.get("status") != "success":
        sys.exit(f"monitoring-check: {expr!r} failed: {body.get('error')}")
    return body["data"]["result"]

names = re.compile(r"\b((?:[a-z_]+:)?zonefwd_[a-z0-9_]+(?::[a-z0-9_]+)?)\b")
exprs = []
for group in yaml.safe_load(open(rules_file))["groups"]:
    for rule in group["rules"]:
        exprs.append(("rule " + rule.get("record", rule.get("alert", "?")), rule["expr"], False))
dash = json.load(open(dashboard_file))
problems = []
for panel in dash["panels"]:
    for t in panel["targets"]:
        exprs.append((f"panel {panel['title']!r}", t["expr"].replace("$instance", ".*"), True))
        # The dashboard works without the recording rules loaded: raw series only.
        if re.search(r"\b[a-z_]+:zonefwd_", t["expr"]):
            problems.append(f"panel {panel['title']!r} reads a recording rule: {t['expr']}")
seen = set()
for what, expr, needs_data in exprs:
    result = query(expr)
    if needs_data and not result:
        problems.append(f"{what}: no data for {expr}")
    for name in names.findall(expr):
        if name in seen:
            continue
        seen.add(name)
        if not query(f'group({{__name__="{name}"}})'):
            problems.append(f"{what}: no series {name} (renamed in zonefwd, or never exported?)")
if problems:
    sys.exit("monitoring-check:\n  " + "\n  ".join(problems))
print(f"monitoring-check: {len(exprs)} expressions evaluated by Prometheus, {len(seen)} series names found")
PY
