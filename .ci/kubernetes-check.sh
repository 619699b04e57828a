#!/usr/bin/env bash
# The Kubernetes manifests as kustomize renders them: the base and each overlay must
# pass kubernetes-validate --strict; the rendered ConfigMaps, laid out where the
# Deployment mounts them (the configuration and each team's fragment), must pass
# `zonefwd check`; each overlay's Service must be an internal load balancer; and
# every rendering must carry the NetworkPolicy.
# The encrypted-dns component is rendered on the azure overlay with the keys its
# comment says to add: its ports must reach the Service and the NetworkPolicy (in,
# and out to DoT upstreams), and the Secret must be mounted where the keys point.
# Then each rendering's pod is run as the strictest runtime would run it (see
# strict_runtime below): it must serve DNS on :53, and DoT on :853 when it has it.
#   bash .ci/kubernetes-check.sh [ZONEFWD_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "kubernetes-check: $*" >&2; exit 1; }
bin=${1:-./target/debug/zonefwd}
command -v kubectl >/dev/null || fail "kubectl (with kustomize) is needed"
python3 -c 'import kubernetes_validate' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore kubernetes-validate==1.37.0
work=$(mktemp -d)
netns=()
trap 'for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null || true; done; rm -rf "$work"' EXIT

# The pod as the strictest runtime runs it: the image's binary with its file
# capability (cap_net_bind_service+ep), as the pod's uid and gid, with no_new_privs
# (allowPrivilegeEscalation: false), an empty permitted set (no capability inherited
# from the runtime), the bounding set reduced to the manifest's capabilities, in a
# fresh network namespace with the pod's sysctls applied: nothing else lowers
# net.ipv4.ip_unprivileged_port_start. It must answer on :53 with no effective
# capability. $1: the rendering; $2: its laid-out root.
strict_runtime() {
  local out=$1 root=$2 name
  name=$(basename "$out" .yaml)
  if [[ $(id -u) != 0 ]] || ! command -v ip >/dev/null; then
    echo "kubernetes-check: SKIPPED the strict-runtime run of $name: needs root and iproute2"
    return
  fi
  command -v setcap >/dev/null || { apt-get update -qq && apt-get install -y -qq libcap2-bin >/dev/null; }
  local spec=$work/$name.pod
  python3 - "$out" >"$spec" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
c = pod["containers"][0]
psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
uid = csc.get("runAsUser", psc.get("runAsUser"))
gid = csc.get("runAsGroup", psc.get("runAsGroup", uid))
if uid in (None, 0):
    sys.exit("the pod must run as a non-root uid")
if csc.get("allowPrivilegeEscalation", True):
    sys.exit("allowPrivilegeEscalation must be false")
caps = csc.get("capabilities", {})
if "ALL" not in caps.get("drop", []):
    sys.exit("the container must drop ALL capabilities")
bounding = ",".join("+" + a.lower() for a in caps.get("add", []))
ports = sorted({p["containerPort"] for p in c["ports"] if p.get("protocol", "TCP") == "UDP"})
# uid gid bounding-set port, then the sysctls.
print(uid, gid, "-all" + ("," + bounding if bounding else ""), ports[0])
for s in psc.get("sysctls", []):
    print(f"sysctl {s['name']}={s['value']}")
PY
  local uid gid bounding port
  read -r uid gid bounding port <"$spec"
  local ns="zfk$$-$name"
  ip netns add "$ns" || fail "cannot create a network namespace"
  netns+=("$ns")
  ip -n "$ns" link set lo up
  while read -r _ kv; do ip netns exec "$ns" sysctl -q -w "$kv" >/dev/null || fail "$name: sysctl $kv"; done < <(grep '^sysctl ' "$spec")
  # The image's binary and the pod's configuration, upstreams on loopback (nothing is
  # sent out), the control socket in a directory the pod's user may write.
  local pod=$work/$name-pod
  mkdir -p "$pod/run"
  chmod 755 "$work"
  install -m 0755 "$bin" "$pod/zonefwd"
  setcap cap_net_bind_service=+ep "$pod/zonefwd"
  cp -r "$root/etc" "$pod/etc"
  sed -i -e 's#^upstreams = .*#upstreams = ["127.0.0.1:9"]#' -e "s#^control = .*#control = \"$pod/run/control.sock\"#" \
    -e "s#^\(tls_cert\|tls_key\) = \"$root/#\1 = \"$pod/#" \
    "$pod"/etc/zonefwd/zonefwd.toml "$pod"/etc/zonefwd-fragments/*/*.toml
  chown -R "$uid:$gid" "$pod/run"
  chmod -R a+rX "$pod"
  # Two steps, as a runtime that hands the process nothing: the first setpriv takes
  # the pod's ids and bounding set (keeping root's permitted set across setresuid, as
  # setpriv does); the second runs as that uid with no file capability of its own, so
  # its permitted set is empty, and sets no_new_privs before it executes zonefwd,
  # whose file capability the kernel then clamps to that empty set.
  ip netns exec "$ns" setpriv --reuid="$uid" --regid="$gid" --clear-groups \
    --inh-caps=-all --ambient-caps=-all --bounding-set="$bounding" \
    setpriv --no-new-privs "$pod/zonefwd" run -c "$pod/etc/zonefwd/zonefwd.toml" >"$pod/log" 2>&1 &
  local pid=$! ok=
  for _ in $(seq 50); do
    if ip netns exec "$ns" "$pod/zonefwd" healthcheck -c "$pod/etc/zonefwd/zonefwd.toml" --timeout 200ms >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  # DoT, when the pod has it: a handshake that verifies the certificate, ALPN dot.
  local dot=
  if [[ -n $ok ]] && grep -q '^tls_listen' "$pod/etc/zonefwd/zonefwd.toml"; then
    dot=$(ip netns exec "$ns" openssl s_client -connect 127.0.0.1:853 -servername dns.zonefwd.test \
      -CAfile "$work/tls/tls.crt" -verify_return_error -alpn dot </dev/null 2>&1 || true)
    grep -q 'ALPN protocol: dot' <<<"$dot" && grep -q 'Verify return code: 0 (ok)' <<<"$dot" \
      || { kill "$pid" 2>/dev/null || true; fail "$name: no verified DoT handshake on :853 in the strict runtime: $dot $(cat "$pod/log")"; }
    dot=" and DoT on :853"
  fi
  local status capeff nnp zpid
  # The serving process itself (ip netns exec and setpriv exec into it, or fork).
  zpid=$(for p in $(ip netns pids "$ns"); do [[ $(cat "/proc/$p/comm" 2>/dev/null) == zonefwd ]] && echo "$p"; done | head -1)
  status=$(cat "/proc/${zpid:-$pid}/status" 2>/dev/null || true)
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [[ -n $ok ]] || fail "$name: the pod does not serve :$port in the strict runtime (uid $uid, no_new_privs, empty permitted set, bounding set $bounding, sysctls: $(grep '^sysctl ' "$spec" | tr '\n' ' ')): $(cat "$pod/log")"
  capeff=$(awk '/^CapEff:/ { print $2 }' <<<"$status")
  nnp=$(awk '/^NoNewPrivs:/ { print $2 }' <<<"$status")
  [[ $nnp == 1 ]] || fail "$name: the emulation did not set no_new_privs"
  [[ $(awk '/^CapPrm:/ { print $2 }' <<<"$status") == 0000000000000000 ]] \
    || fail "$name: the emulation left a permitted capability: $(grep '^Cap' <<<"$status")"
  [[ $(awk '/^Uid:/ { print $3 }' <<<"$status") == "$uid" ]] || fail "$name: the emulation did not run as uid $uid"
  echo "kubernetes-check: $name serves :$port$dot as uid $uid with no_new_privs and CapEff $capeff (strict runtime)"
}

# The azure overlay with the encrypted-dns component, as its comment says to add it,
# in a copy of the tree (kustomize loads only below the kustomization's root), and a
# self-signed certificate standing in for the Secret zonefwd-tls.
cp -r deploy/kubernetes "$work/kubernetes"
encrypted=$work/kubernetes/overlays/encrypted-dns
cp -r deploy/kubernetes/overlays/azure "$encrypted"
printf 'components:\n  - ../../components/encrypted-dns\n' >>"$encrypted/kustomization.yaml"
sed -n 's/^#   \(tls_listen\|https_listen\|tls_cert\|tls_key\) = /\1 = /p' \
  deploy/kubernetes/components/encrypted-dns/kustomization.yaml >"$work/tls-keys"
[[ $(wc -l <"$work/tls-keys") == 4 ]] || fail "the encrypted-dns component's comment does not give the four [server] keys"
sed -i "/^\[server\]/r $work/tls-keys" "$encrypted/zonefwd.toml"
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
mkdir -p "$work/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=dns.zonefwd.test \
  -addext subjectAltName=DNS:dns.zonefwd.test -keyout "$work/tls/tls.key" -out "$work/tls/tls.crt" 2>/dev/null \
  || fail "openssl cannot make a certificate"

for dir in deploy/kubernetes/base deploy/kubernetes/overlays/*/ "$encrypted"; do
  dir=${dir%/}
  name=$(basename "$dir")
  out=$work/$name.yaml
  kubectl kustomize "$dir" >"$out" || fail "$dir: kustomize failed"
  python3 -m kubernetes_validate --strict "$out" >/dev/null || {
    python3 -m kubernetes_validate --strict "$out" >&2 || true
    fail "$dir: the rendered manifests do not validate"
  }
  root=$work/$name-root
  python3 - "$out" "$root" "$name" "$dir" "$work/tls" <<'PY' || fail "$dir: see above"
import os, shutil, sys, tomllib, yaml
out, root, name, src, made_tls = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(out)) if d]
kinds = {d["kind"] for d in docs}
for need in ("Deployment", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget"):
    if need not in kinds:
        sys.exit(f"no {need} in the rendering")
# The ConfigMaps where the Deployment mounts them, under `root`: the configuration
# and its fragments as a pod sees them.
maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
volumes = {v["name"]: v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
mounted = 0
for container in pod["containers"]:
    for m in container.get("volumeMounts", []):
        if m["name"] in secrets:
            if secrets[m["name"]] != "zonefwd-tls":
                sys.exit(f"volume {m['name']} is Secret {secrets[m['name']]}: only zonefwd-tls is known here")
            # The kubernetes.io/tls Secret's two keys, as the kubelet writes them.
            shutil.copytree(made_tls, root + m["mountPath"])
            continue
        if m["name"] not in volumes:
            continue
        data = maps.get(volumes[m["name"]])
        if data is None:
            sys.exit(f"volume {m['name']} names ConfigMap {volumes[m['name']]}, which is not rendered")
        path = root + m["mountPath"]
        os.makedirs(path, exist_ok=True)
        for key, text in data.items():
            open(os.path.join(path, key), "w").write(text)
            mounted += 1
if not os.path.exists(root + "/etc/zonefwd/zonefwd.toml"):
    sys.exit("no ConfigMap is mounted as /etc/zonefwd/zonefwd.toml")
svc = next(d for d in docs if d["kind"] == "Service")
ann = svc["metadata"].get("annotations", {})
if name != "base":
    internal = ann.get("service.beta.kubernetes.io/azure-load-balancer-internal") == "true" \
        or ann.get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internal"
    if svc["spec"].get("type") != "LoadBalancer" or not internal:
        sys.exit("the Service is not an internal load balancer")
elif svc["spec"].get("type") not in (None, "ClusterIP"):
    sys.exit("the base Service must expose nothing on its own (ClusterIP)")
# An overlay's parameters (params.env) reach the manifests: the load balancer's fixed
# address (on-prem forwarders point at it) and the monitoring namespace.
params_file = os.path.join(src, "params.env")
if name != "base":
    if not os.path.exists(params_file):
        sys.exit("no params.env: the load balancer's address and the monitoring namespace are parameters")
    params = dict(l.split("=", 1) for l in open(params_file).read().splitlines() if l.strip() and not l.startswith("#"))
    if "set from params.env" in open(out).read():
        sys.exit("a placeholder was not replaced from params.env")
    addresses = params.get("LOAD_BALANCER_IP") or params.get("LOAD_BALANCER_IPS")
    if not addresses or addresses not in ann.values():
        sys.exit(f"the Service does not carry the load balancer address {addresses!r} of params.env: {ann}")
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    namespaces = [f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                  for rule in policy["spec"]["ingress"] for f in rule["from"] if "namespaceSelector" in f]
    if namespaces != [params.get("MONITORING_NAMESPACE")]:
        sys.exit(f"the NetworkPolicy admits {namespaces} to the metrics port, not MONITORING_NAMESPACE of params.env")
    if any(d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("zonefwd-params") for d in docs):
        sys.exit("the parameters ConfigMap is applied: it must stay local (config.kubernetes.io/local-config)")
# The encrypted-dns component: each listener's port in the container, on the Service
# and admitted by the NetworkPolicy with DNS's sources; DoT out to tls:// upstreams;
# the certificate files where the Secret is mounted.
if name == "encrypted-dns":
    server = tomllib.load(open(root + "/etc/zonefwd/zonefwd.toml", "rb"))["server"]
    for key in ("tls_cert", "tls_key"):
        if not os.path.isfile(root + server[key]):
            sys.exit(f"{key} = {server[key]} is not a file of the mounted Secret zonefwd-tls")
    named = {p.get("name"): p for p in pod["containers"][0]["ports"]}
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]
    admitted = {(p["protocol"], p["port"]) for p in policy["ingress"][0]["ports"]}
    egress = {(p.get("protocol", "TCP"), p["port"]) for r in policy["egress"] for p in r["ports"]}
    for key in ("tls_listen", "https_listen"):
        port = int(server[key][0].rsplit(":", 1)[1])
        cport = [n for n, p in named.items() if p["containerPort"] == port and p["protocol"] == "TCP"]
        if not cport:
            sys.exit(f"{key}'s port {port} is not a container port")
        if not [p for p in svc["spec"]["ports"] if p.get("targetPort") == cport[0] and p["protocol"] == "TCP"]:
            sys.exit(f"the Service has no port to {cport[0]} ({key})")
        if ("TCP", port) not in admitted:
            sys.exit(f"the NetworkPolicy does not admit TCP {port} ({key})")
    if ("TCP", 853) not in egress:
        sys.exit("the NetworkPolicy does not let DoT out to tls:// upstreams (TCP 853)")
    # The laid-out file names the laid-out certificate, for zonefwd check.
    conf = root + "/etc/zonefwd/zonefwd.toml"
    text = open(conf).read()
    for key in ("tls_cert", "tls_key"):
        text = text.replace(f'{key} = "{server[key]}"', f'{key} = "{root}{server[key]}"')
    open(conf, "w").write(text)
PY
  "$bin" check --config "$root/etc/zonefwd/zonefwd.toml" >"$work/$name.check" 2>&1 || {
    cat "$work/$name.check" >&2
    fail "$dir: its ConfigMap's zonefwd.toml does not pass zonefwd check"
  }
  grep -q '; from .*/etc/zonefwd-fragments/' "$work/$name.check" \
    || fail "$dir: zonefwd check saw no route from a mounted fragment"
  echo "kubernetes-check: $dir renders, validates, and its configuration with its fragments passes check"
  strict_runtime "$out" "$root"
done
