#!/usr/bin/env bash
# Build the rig's control-plane binaries from the Go module proxy, once per
# pinned version. k8s.io/kubernetes and etcd replace their sibling modules with
# local paths, so `go install pkg@version` refuses them: we build from a small
# throw-away consumer module that pins those siblings to their published tags.
# Prints a line per binary with its expected time on a cold 2-core machine, and
# nothing but "binaries ready" when every binary is already cached.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
cache="${RIG_BIN_CACHE:-$HOME/.cache/datarobot-mlops-rig}"
mkdir -p "$cache"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
GO_MINOR_NEEDED=26  # Go 1.26 or newer: what helm $HELM_VERSION and $HELM4_VERSION need (go.mod), no toolchain download

log() { printf '[rig-build] %s\n' "$*" >&2; }

# Seconds each binary takes in a cold build (empty Go module and build caches) on 2 cores: measured (11m11s on a
# busy machine, etcd 53, kwok 79, helm 61, kube-apiserver 314, kube-controller-manager 117, kube-scheduler 7,
# kubectl 38), scaled to the ~9 min of a quiet one. The first binary of a part includes downloading its modules.
declare -A COLD=([etcd]=45 [kwok]=65 [helm]=50 [helm4]=90
                 [kube-apiserver]=255 [kube-controller-manager]=95 [kube-scheduler]=10 [kubectl]=30)
about() {  # about SECONDS -> "<1 min" or "~N min" (rounded)
  if [ "$1" -lt 45 ]; then printf '<1 min'; else printf '~%s min' "$(( ($1 + 30) / 60 ))"; fi
}

KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
kube_out="$cache/kubernetes-$K8S_VERSION"
etcd_out="$cache/etcd-$ETCD_VERSION"
kwok_out="$cache/kwok-$KWOK_VERSION"
helm_out="$cache/helm-$HELM_VERSION"
helm4_out="$cache/helm-$HELM4_VERSION"

# What is missing, in build order (Kubernetes' binaries are built and cached together).
todo=()
[ -x "$etcd_out/etcd" ] || todo+=(etcd)
[ -x "$kwok_out/kwok" ] || todo+=(kwok)
[ -x "$helm_out/helm" ] || todo+=(helm)
[ -x "$helm4_out/helm" ] || todo+=(helm4)
for cmd in "${KUBE_CMDS[@]}"; do
  [ -x "$kube_out/$cmd" ] || { todo+=("${KUBE_CMDS[@]}"); break; }
done
step=0
total=${#todo[@]}
started=$SECONDS
step_started=$SECONDS

# progress NAME VERSION: the "n/total building NAME VERSION (cold: ~N min)" line.
progress() {
  step=$((step + 1)); step_started=$SECONDS
  log "$step/$total building $1 $2 (cold: $(about "${COLD[$1]}"))"
}
done_in() { log "    $1 took $((SECONDS - step_started)) s"; }

need_go=$total
[ -s "$kwok_out/stages.yaml" ] || need_go=1
if [ "$total" -gt 0 ]; then
  cold_total=0 expected=0
  for name in "${!COLD[@]}"; do cold_total=$((cold_total + COLD[$name])); done
  for name in "${todo[@]}"; do expected=$((expected + COLD[$name])); done
  log "building $total rig binaries from the Go module proxy, once: a cold build of all takes $(about "$cold_total")" \
      "on 2 cores (this one: up to $(about "$expected")); they are cached in $cache"
fi
if [ "$need_go" -gt 0 ]; then
  if ! command -v go >/dev/null; then
    log "error: Go 1.$GO_MINOR_NEEDED or newer is needed to build the rig's binaries (no \`go\` on PATH): https://go.dev/dl/"
    exit 1
  fi
  go_version=$(go env GOVERSION)  # go1.25.3
  go_minor=${go_version#go1.}; go_minor=${go_minor%%[!0-9]*}  # go1.26rc1 -> 26
  if [ "${go_version#go1.}" = "$go_version" ] || [ -z "$go_minor" ] || [ "$go_minor" -lt "$GO_MINOR_NEEDED" ]; then
    log "error: Go 1.$GO_MINOR_NEEDED or newer is needed to build the rig's binaries; \`go\` on PATH is $go_version: https://go.dev/dl/"
    exit 1
  fi
fi

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
  local out=$kube_out cmd missing=0
  for cmd in "${KUBE_CMDS[@]}"; do [ -x "$out/$cmd" ] || missing=1; done
  [ "$missing" = 0 ] && return 0
  local work; work=$(mktemp -d)
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ld="$ld -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ld="$ld -X k8s.io/component-base/version.gitTreeState=clean"
  ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  ld="$ld -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  mkdir -p "$out.tmp"
  for cmd in "${KUBE_CMDS[@]}"; do
    progress "$cmd" "$K8S_VERSION"
    # The first one also resolves and downloads Kubernetes' modules.
    [ -s "$work/go.mod" ] || consumer_module "$work" k8s.io/kubernetes "$K8S_VERSION" 'k8s.io/' "v0.${K8S_VERSION#v1.}"
    (cd "$work" && go build -trimpath -ldflags "$ld" -o "$out.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
    done_in "$cmd"
  done
  rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$work"
}

build_etcd() {
  local out=$etcd_out
  [ -x "$out/etcd" ] && return 0
  progress etcd "$ETCD_VERSION"
  local work; work=$(mktemp -d)
  consumer_module "$work" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" 'go.etcd.io/etcd/' "$ETCD_VERSION"
  mkdir -p "$out.tmp"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$work"
  done_in etcd
}

build_plain() {  # build_plain NAME VERSION PACKAGE LDFLAGS [PART]: PART names it in progress lines (default NAME)
  local name=$1 version=$2 pkg=$3 ld=$4 part=${5:-$1}
  local out="$cache/$name-$version"
  [ -x "$out/$name" ] && return 0
  progress "$part" "$version"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w $ld" "$pkg@$version"
  rm -rf "$out" && mv "$out.tmp" "$out"
  done_in "$part"
}

# kwok needs stages to move nodes and pods through their life; take the ones
# its release ships (fast node/pod lifecycle, lease heartbeat, Job completion).
kwok_stages() {
  local out=$kwok_out
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
build_plain helm "$HELM4_VERSION" helm.sh/helm/v4/cmd/helm \
  "-X helm.sh/helm/v4/internal/version.version=$HELM4_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean" helm4
kwok_stages
build_kubernetes

# Stable names for everything else to use. helm is not among them: each rig links the helms its checkout pins
# (versions.env) into its own .rig/bin, so checkouts pinning different helms share this cache.
bin="$cache/bin"; mkdir -p "$bin"
for f in "$kube_out"/* "$etcd_out/etcd" "$kwok_out/kwok" "$kwok_out/stages.yaml"; do
  ln -sf "$f" "$bin/$(basename "$f")"
done
if [ "$total" -gt 0 ]; then
  log "binaries ready in $bin (built $total in $((SECONDS - started)) s)"
else
  log "binaries ready in $bin"
fi
