#!/usr/bin/env bash
# Builds the local control plane used by `make e2e` and `make demo-cluster`:
# etcd, kube-apiserver, kube-controller-manager, kubectl and helm, from the
# modules pinned in go.mod/go.sum, fetched through the Go module proxy.
#
# Output: $STREAMSCALE_K8S_BIN (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/streamscale/k8s-<K8S_VERSION>-helm-<HELM_VERSION>/bin),
# outside the repository so that a fresh clone (CI) reuses it.  A binary that
# exists is not rebuilt; delete the directory to force a rebuild.
# Prints the directory on the last line of stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/versions.env"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/streamscale"
bin="${STREAMSCALE_K8S_BIN:-$cache_root/k8s-${K8S_VERSION}-helm-${HELM_VERSION}/bin}"
mkdir -p "$bin"

# name -> Go package
targets=(
    "etcd go.etcd.io/etcd/server/v3"
    "kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver"
    "kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager"
    "kubectl k8s.io/kubernetes/cmd/kubectl"
    "helm helm.sh/helm/v3/cmd/helm"
)
missing=()
for t in "${targets[@]}"; do
    set -- $t
    [ -x "$bin/$1" ] || missing+=("$t")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "cluster binaries cached in $bin (nothing to build)" >&2
    echo "$bin"
    exit 0
fi

command -v go >/dev/null 2>&1 || {
    echo "build.sh: Go (1.24 or later) is needed to build the local control plane: https://go.dev/dl/" >&2
    exit 1
}
start=$(date +%s)
export GOFLAGS="-trimpath -mod=readonly"
export CGO_ENABLED=0
# 2 parallel compile jobs: the apiserver link needs ~2 GB, and CI machines are small.
par="${STREAMSCALE_GO_PARALLEL:-2}"
version_pkg=k8s.io/component-base/version
ldflags="-s -w -X ${version_pkg}.gitVersion=${K8S_VERSION} -X ${version_pkg}.gitMajor=1 -X ${version_pkg}.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X ${version_pkg}.gitTreeState=clean"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
cd "$here"
for t in "${missing[@]}"; do
    set -- $t
    t0=$(date +%s)
    flags="$ldflags"
    [ "$1" = helm ] && flags="$helm_ldflags"
    echo "building $1 ($2) ..." >&2
    go build -p "$par" -ldflags="$flags" -o "$bin/$1.tmp" "$2"
    mv "$bin/$1.tmp" "$bin/$1"
    echo "  $1 built in $(( $(date +%s) - t0 ))s" >&2
done
echo "cluster binaries built in $(( $(date +%s) - start ))s into $bin" >&2
echo "$bin"
