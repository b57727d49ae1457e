#!/usr/bin/env bash
# Build the rig's control-plane binaries from the Go module proxy, once per
# pinned version. k8s.io/kubernetes and etcd replace their sibling modules with
# local paths, so `go install pkg@version` refuses them: we build from a small
# throw-away consumer module that pins those siblings to their published tags.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
cache="${RIG_BIN_CACHE:-$HOME/.cache/datarobot-mlops-rig}"
mkdir -p "$cache"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

log() { printf '[rig-build] %s\n' "$*" >&2; }

# consumer_module DIR MODULE VERSION REPLACE_PREFIX REPLACE_VERSION
# Writes go.mod that requires MODULE@VERSION and pins every module MODULE's own
# go.mod maps to a local path (prefix match) to REPLACE_VERSION.
consumer_module() {
  local dir=$1 module=$2 version=$3 prefix=$4 rversion=$5
  mkdir -p "$dir"
  (
    cd "$dir"
    printf 'module rigbuild\n\ngo 1.25\n' > go.mod
    local modfile
    modfile=$(go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
    grep -E "^\s*${prefix}[^ ]* => \.\.?/" "$modfile" | awk '{print $1}' | sort -u | while read -r dep; do
      go mod edit -replace "$dep=$dep@$rversion"
    done
    go mod edit -require "$module@$version"
  )
}

build_kubernetes() {
  local out="$cache/kubernetes-$K8S_VERSION"
  [ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ] && return 0
  log "building Kubernetes $K8S_VERSION (cold: many minutes on 2 cores)"
  local work; work=$(mktemp -d)
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  consumer_module "$work" k8s.io/kubernetes "$K8S_VERSION" 'k8s.io/' "v0.${K8S_VERSION#v1.}"
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ld="$ld -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ld="$ld -X k8s.io/component-base/version.gitTreeState=clean"
  ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  ld="$ld -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  mkdir -p "$out.tmp"
  (
    cd "$work"
    for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
      log "  $cmd"
      go build -trimpath -ldflags "$ld" -o "$out.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    done
  )
  rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$work"
}

build_etcd() {
  local out="$cache/etcd-$ETCD_VERSION"
  [ -x "$out/etcd" ] && return 0
  log "building etcd $ETCD_VERSION"
  local work; work=$(mktemp -d)
  consumer_module "$work" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" 'go.etcd.io/etcd/' "$ETCD_VERSION"
  mkdir -p "$out.tmp"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$work"
}

build_plain() {  # build_plain NAME VERSION PACKAGE LDFLAGS
  local name=$1 version=$2 pkg=$3 ld=$4
  local out="$cache/$name-$version"
  [ -x "$out/$name" ] && return 0
  log "building $name $version"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w $ld" "$pkg@$version"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# kwok needs stages to move nodes and pods through their life; take the ones
# its release ships (fast node/pod lifecycle, lease heartbeat, Job completion).
kwok_stages() {
  local out="$cache/kwok-$KWOK_VERSION"
  [ -s "$out/stages.yaml" ] && return 0
  local src
  src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo '---'; cat "$src/kustomize/stage/$f"
  done > "$out/stages.yaml.tmp"
  mv "$out/stages.yaml.tmp" "$out/stages.yaml"
}

build_etcd
build_plain kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
build_plain helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
kwok_stages
build_kubernetes

# Stable names for everything else to use.
bin="$cache/bin"; mkdir -p "$bin"
for f in "$cache/kubernetes-$K8S_VERSION"/* "$cache/etcd-$ETCD_VERSION/etcd" \
         "$cache/kwok-$KWOK_VERSION/kwok" "$cache/kwok-$KWOK_VERSION/stages.yaml" "$cache/helm-$HELM_VERSION/helm"; do
  ln -sf "$f" "$bin/$(basename "$f")"
done
log "binaries ready in $bin"
