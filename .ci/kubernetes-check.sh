#!/usr/bin/env bash
# The Kubernetes manifests as kustomize renders them: the base and each overlay must
# pass kubernetes-validate --strict, the configuration in each rendered ConfigMap must
# pass `zonefwd check`, each overlay's Service must be an internal load balancer, and
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
  python3 - "$out" "$work/$name.toml" "$name" <<'PY' || fail "$dir: see above"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {d["kind"] for d in docs}
for need in ("Deployment", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget"):
    if need not in kinds:
        sys.exit(f"no {need} in the rendering")
config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["zonefwd.toml"]
open(sys.argv[2], "w").write(config)
svc = next(d for d in docs if d["kind"] == "Service")
ann = svc["metadata"].get("annotations", {})
if sys.argv[3] != "base":
    internal = ann.get("service.beta.kubernetes.io/azure-load-balancer-internal") == "true" \
        or ann.get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internal"
    if svc["spec"].get("type") != "LoadBalancer" or not internal:
        sys.exit("the Service is not an internal load balancer")
elif svc["spec"].get("type") not in (None, "ClusterIP"):
    sys.exit("the base Service must expose nothing on its own (ClusterIP)")
PY
  "$bin" check --config "$work/$name.toml" >"$work/$name.check" 2>&1 || {
    cat "$work/$name.check" >&2
    fail "$dir: its ConfigMap's zonefwd.toml does not pass zonefwd check"
  }
  echo "kubernetes-check: $dir renders, validates, and its configuration passes check ($(head -1 "$work/$name.check"))"
done
