#!/usr/bin/env bash
# The Kubernetes manifests as kustomize renders them: the base and each overlay must
# pass kubernetes-validate --strict; the rendered ConfigMaps, laid out where the
# Deployment mounts them (the configuration and each team's fragment), must pass
# `zonefwd check`; each overlay's Service must be an internal load balancer; and
# every rendering must carry the NetworkPolicy.
#   bash .ci/kubernetes-check.sh [ZONEFWD_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "kubernetes-check: $*" >&2; exit 1; }
bin=${1:-./target/debug/zonefwd}
command -v kubectl >/dev/null || fail "kubectl (with kustomize) is needed"
python3 -c 'import kubernetes_validate' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore kubernetes-validate==1.37.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for dir in deploy/kubernetes/base deploy/kubernetes/overlays/*/; do
  dir=${dir%/}
  name=$(basename "$dir")
  out=$work/$name.yaml
  kubectl kustomize "$dir" >"$out" || fail "$dir: kustomize failed"
  python3 -m kubernetes_validate --strict "$out" >/dev/null || {
    python3 -m kubernetes_validate --strict "$out" >&2 || true
    fail "$dir: the rendered manifests do not validate"
  }
  root=$work/$name-root
  python3 - "$out" "$root" "$name" <<'PY' || fail "$dir: see above"
import os, sys, yaml
out, root, name = sys.argv[1:]
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
mounted = 0
for container in pod["containers"]:
    for m in container.get("volumeMounts", []):
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
PY
  "$bin" check --config "$root/etc/zonefwd/zonefwd.toml" >"$work/$name.check" 2>&1 || {
    cat "$work/$name.check" >&2
    fail "$dir: its ConfigMap's zonefwd.toml does not pass zonefwd check"
  }
  grep -q '; from .*/etc/zonefwd-fragments/' "$work/$name.check" \
    || fail "$dir: zonefwd check saw no route from a mounted fragment"
  echo "kubernetes-check: $dir renders, validates, and its configuration with its fragments passes check"
done
