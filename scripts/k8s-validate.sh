#!/usr/bin/env bash
# Renders deploy/kubernetes with kustomize and validates every object against
# the Kubernetes API schemas, offline: kubernetes-validate (PyPI) bundles the
# schemas. Exits non-zero on any invalid object, on an object whose kind has
# no schema, or when nothing is rendered.
#
#   scripts/k8s-validate.sh
#
# Needs: kubectl (for `kubectl kustomize`; Debian's `kubernetes-client`
# package is installed when there is none) and python3 with venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest Kubernetes the manifests support (the pod-index label NODE_ID
# is read from appeared in 1.28) and a recent one.
K8S_VERSIONS=(${K8S_VERSIONS:-1.28.0 1.33.0})
VALIDATOR_VERSION=1.37.0
start=$(date +%s)

if ! command -v kubectl >/dev/null 2>&1; then
    echo "installing kubectl (Debian package kubernetes-client)"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rendered="$work/rendered.yaml"
kubectl kustomize deploy/kubernetes >"$rendered"
objects=$(grep -c '^kind: ' "$rendered" || true)
if [ "$objects" -eq 0 ]; then
    echo "kubectl kustomize deploy/kubernetes rendered no object" >&2
    exit 1
fi
echo "rendered $objects objects:"
grep '^kind: ' "$rendered" | sort | uniq -c | sed 's/kind: //'

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$VALIDATOR_VERSION"

status=0
for version in "${K8S_VERSIONS[@]}"; do
    log="$work/validate-$version.log"
    # --strict rejects fields the schema does not know (a misspelt key).
    if ! "$work/venv/bin/kubernetes-validate" --strict --kubernetes-version "$version" \
        "$rendered" >"$log" 2>&1; then
        status=1
    fi
    # A kind without a schema is only a warning to the validator; here it
    # fails, since nothing would have been checked.
    if grep -q '^\(ERROR\|WARN\)' "$log"; then
        status=1
    fi
    grep '^\(ERROR\|WARN\)' "$log" || true
    passed=$(grep -c '^INFO .* passed for resource' "$log" || true)
    echo "Kubernetes $version: $passed of $objects objects valid"
    [ "$passed" -eq "$objects" ] || status=1
done

echo "took $(($(date +%s) - start)) s"
if [ "$status" -ne 0 ]; then
    echo "deploy/kubernetes: validation FAILED" >&2
fi
exit "$status"
