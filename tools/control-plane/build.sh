#!/usr/bin/env bash
# Builds the local control plane's binaries from the official Go modules, once, into a
# cache folder keyed by version. Called by `cargo xtask cluster up`; safe to run by hand.
#
#   tools/control-plane/build.sh            # prints the bin folder as its last line
#   tools/control-plane/build.sh node       # kubelet and kube-proxy for a real node (own folder)
#   tools/control-plane/build.sh helm       # helm, for the chart's tests (own folder)
#   tools/control-plane/build.sh coredns    # CoreDNS, the regions' DNS servers (own folder)
#
# Nothing upstream is vendored here: the `go` client fetches the modules from the Go module
# proxy into a module cache under the same cache root.
set -euo pipefail

: "${K8S_VERSION:=1.36.3}"
: "${ETCD_VERSION:=3.6.16}"
: "${KWOK_VERSION:=0.8.0}"
: "${HELM_VERSION:=4.3.1}"
: "${COREDNS_VERSION:=1.15.0}"
: "${CUTOVER_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/cutover}"

MINOR=${K8S_VERSION#*.}; MINOR=${MINOR%%.*}; PATCH=${K8S_VERSION##*.}
STAGING="v0.${MINOR}.${PATCH}"
BIN="$CUTOVER_CACHE/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_$(uname -m)"
export GOMODCACHE="$CUTOVER_CACHE/gomod" GOCACHE="$CUTOVER_CACHE/gobuild" CGO_ENABLED=0
export GOFLAGS="-buildvcs=false"
# Parallel compiles of the Kubernetes tree on a 2-core machine: let Go pick, but no more.
export GOMAXPROCS="${GOMAXPROCS:-$(nproc)}"

log() { printf '[build] %s\n' "$*" >&2; }

command -v go >/dev/null 2>&1 || {
  echo "error: the 'go' command is not on PATH; install Go 1.26 (https://go.dev/dl) and retry" >&2
  exit 3
}

# The version Kubernetes binaries report (as a release build would stamp it).
version_ldflags() {
  local ldf="-s -w" k
  for k in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $k.gitVersion=v$K8S_VERSION -X $k.gitMajor=1 -X $k.gitMinor=$MINOR"
    ldf+=" -X $k.gitTreeState=clean -X $k.buildDate=1970-01-01T00:00:00Z"
  done
  printf '%s' "$ldf"
}

# A module (in the current folder) named local.invalid/$1 whose tools are the
# k8s.io/kubernetes commands named by the other arguments.
k8s_module() {
  local name="$1" gomod c m
  shift
  printf 'module local.invalid/%s\n\ngo 1.26.0\n' "$name" > go.mod
  # k8s.io/kubernetes requires its staging modules at the placeholder v0.0.0 and maps them
  # with replace directives that consumers do not inherit: map each to its published tag.
  gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$gomod" | sort -u | while read -r m; do
    go mod edit -replace="$m=$m@$STAGING"
  done
  go mod edit -require="k8s.io/kubernetes@v$K8S_VERSION"
  for c in "$@"; do
    go mod edit -tool="k8s.io/kubernetes/cmd/$c"
  done
  go mod tidy
}

build_k8s() {
  local d="$CUTOVER_CACHE/src/k8s-$K8S_VERSION"
  mkdir -p "$d"; cd "$d"
  if [[ ! -f go.sum ]]; then
    k8s_module cutover-k8s-bin kube-apiserver kube-controller-manager kube-scheduler kubectl
  fi
  go build -trimpath -tags selinux,notest -ldflags "$(version_ldflags)" -o "$BIN.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}

build_etcd() {
  local d="$CUTOVER_CACHE/src/etcd-$ETCD_VERSION"
  mkdir -p "$d"; cd "$d"
  if [[ ! -f go.sum ]]; then
    printf 'module local.invalid/cutover-etcd-bin\n\ngo 1.26.0\n' > go.mod
    go mod edit -require="go.etcd.io/etcd/server/v3@v$ETCD_VERSION" -tool=go.etcd.io/etcd/server/v3
    go mod tidy
  fi
  go build -trimpath -ldflags "-s -w" -o "$BIN.tmp/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  local d="$CUTOVER_CACHE/src/kwok-$KWOK_VERSION"
  mkdir -p "$d"; cd "$d"
  if [[ ! -f go.sum ]]; then
    printf 'module local.invalid/cutover-kwok-bin\n\ngo 1.26.0\n' > go.mod
    go mod edit -require="sigs.k8s.io/kwok@v$KWOK_VERSION" -tool=sigs.k8s.io/kwok/cmd/kwok
    go mod tidy
  fi
  go build -trimpath -ldflags "-s -w" -o "$BIN.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok
  # kwok needs Stage objects; take the upstream "fast" stages from the module itself.
  local dir
  dir=$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
  {
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
             pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      cat "$dir/kustomize/stage/$f"; printf '\n---\n'
    done
  } > "$BIN.tmp/kwok-stages.yaml"
}

# kubelet and kube-proxy, from the same k8s.io/kubernetes module and version as the control
# plane, in a module of their own (they pull in modules the control plane does not need, so
# the control plane's go.sum and cache key stay as they are).
build_node() {
  local d="$CUTOVER_CACHE/src/k8s-node-$K8S_VERSION" out="$1"
  mkdir -p "$d"; cd "$d"
  if [[ ! -f go.sum ]]; then
    k8s_module cutover-k8s-node-bin kubelet kube-proxy
  fi
  go build -trimpath -tags selinux,notest -ldflags "$(version_ldflags)" -o "$out/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
}

# helm from its Go module (helm.sh/helm/v4), stamped with its version.
build_helm() {
  local d="$CUTOVER_CACHE/src/helm-$HELM_VERSION" out="$1"
  mkdir -p "$d"; cd "$d"
  if [[ ! -f go.sum ]]; then
    printf 'module local.invalid/cutover-helm-bin\n\ngo 1.26.0\n' > go.mod
    go mod edit -require="helm.sh/helm/v4@v$HELM_VERSION" -tool=helm.sh/helm/v4/cmd/helm
    go mod tidy
  fi
  go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION" \
    -o "$out/helm" helm.sh/helm/v4/cmd/helm
}

# CoreDNS from its Go module (github.com/coredns/coredns), with its default plugins (etcd
# among them), stamped with its version.
build_coredns() {
  local d="$CUTOVER_CACHE/src/coredns-$COREDNS_VERSION" out="$1"
  mkdir -p "$d"; cd "$d"
  if [[ ! -f go.sum ]]; then
    printf 'module local.invalid/cutover-coredns-bin\n\ngo 1.26.0\n' > go.mod
    go mod edit -require="github.com/coredns/coredns@v$COREDNS_VERSION" -tool=github.com/coredns/coredns
    go mod tidy
  fi
  go build -trimpath -ldflags "-s -w" -o "$out/coredns" github.com/coredns/coredns
}

# Build into cache folder $1 (described as $2) once, by running the rest of the arguments
# with a temporary folder appended; print the folder.
cached() {
  local dir="$1" what="$2" start
  shift 2
  if [[ ! -f "$dir/.complete" ]]; then
    start=$(date +%s)
    log "building $what"
    mkdir -p "$dir.tmp"
    ( "$@" "$dir.tmp" )
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    date +%s > "$dir/.complete"
    log "built in $(( $(date +%s) - start ))s"
  fi
  echo "$dir"
}

case "${1:-}" in
  helm)
    cached "$CUTOVER_CACHE/helm-${HELM_VERSION}_$(uname -m)" "helm v$HELM_VERSION" build_helm
    exit 0 ;;
  coredns)
    cached "$CUTOVER_CACHE/coredns-${COREDNS_VERSION}_$(uname -m)" "CoreDNS v$COREDNS_VERSION" build_coredns
    exit 0 ;;
  node)
    cached "$CUTOVER_CACHE/k8s-node-${K8S_VERSION}_$(uname -m)" \
      "kubelet and kube-proxy v$K8S_VERSION (about 30 s with the control plane's Go cache warm)" build_node
    exit 0 ;;
esac

if [[ -f "$BIN/.complete" ]]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN.tmp"
start=$(date +%s)
[[ -x "$BIN.tmp/etcd" ]] || { log "building etcd v$ETCD_VERSION"; ( build_etcd ); }
[[ -x "$BIN.tmp/kwok" ]] || { log "building kwok v$KWOK_VERSION"; ( build_kwok ); }
[[ -x "$BIN.tmp/kube-apiserver" && -x "$BIN.tmp/kubectl" ]] || {
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl v$K8S_VERSION (cold: 15-30 min on 2 cores)"
  ( build_k8s )
}
rm -rf "$BIN"
mv "$BIN.tmp" "$BIN"
date +%s > "$BIN/.complete"
log "built in $(( $(date +%s) - start ))s"
echo "$BIN"
