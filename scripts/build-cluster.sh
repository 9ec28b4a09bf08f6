#!/usr/bin/env bash
# Builds the binaries of the test cluster (`npm run cluster:build`; `cluster:up` runs it first) from their
# Go modules at pinned versions:
#
#   etcd v3.6.17; kube-apiserver, kube-controller-manager, kube-scheduler and kubectl v1.37.2;
#   KWOK v0.8.0 (simulated nodes); the OpenTelemetry Operator v0.140.0 and its CRDs, generated from its
#   Go API with controller-gen v0.19.0 (the version the operator's Makefile pins).
#
# - Each binary is cached by version outside the clone, in $PHOENIX_CLUSTER_CACHE (default
#   ~/.cache/phoenix-cluster), and copied into .phoenix-cluster/bin (git-ignored): a fresh clone on a
#   machine that built them once copies them in seconds. Only what is missing is built.
# - Go's module and build caches are the machine's own. Cold, on 2 cores: about 45 min for the
#   Kubernetes binaries, 2 min each for etcd and KWOK, 5 min for the operator; warm, seconds.
# - Without a Go toolchain it says so and exits 0 (the Kubernetes suites then skip and say why), unless
#   PHOENIX_CLUSTER_REQUIRED=1, where it fails.
#
# Environment: PHOENIX_CLUSTER_DIR (default <repo>/.phoenix-cluster), PHOENIX_CLUSTER_CACHE, GO.
set -euo pipefail

KUBERNETES_VERSION=v1.37.2
STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.6.17
KWOK_VERSION=v0.8.0
OPERATOR_VERSION=v0.140.0
CONTROLLER_GEN_VERSION=v0.19.0

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${PHOENIX_CLUSTER_DIR:-$ROOT/.phoenix-cluster}"
CACHE="${PHOENIX_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phoenix-cluster}"
BIN="$OUT/bin"

say() { printf '[cluster:build] %s\n' "$*"; }

# shellcheck source=go-build-lib.sh
source "$ROOT/scripts/go-build-lib.sh"

mkdir -p "$BIN" "$CACHE"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  say "another build holds $CACHE/.lock; waiting for it"
  flock 9
fi

# name → the version it is cached under
declare -A VERSION_OF=(
  [etcd]=$ETCD_VERSION [kube-apiserver]=$KUBERNETES_VERSION [kube-controller-manager]=$KUBERNETES_VERSION
  [kube-scheduler]=$KUBERNETES_VERSION [kubectl]=$KUBERNETES_VERSION [kwok]=$KWOK_VERSION
  [opentelemetry-operator]=$OPERATOR_VERSION [controller-gen]=$CONTROLLER_GEN_VERSION
)
cached() { printf '%s/%s-%s/%s' "$CACHE" "$1" "${VERSION_OF[$1]}" "$1"; }

# Copies a cached binary into the clone's folder when that is not the same version already.
install_from_cache() { # name
  local name="$1" src
  src="$(cached "$name")"
  [[ -x "$src" ]] || return 1
  if [[ -x "$BIN/$name" && "$(cat "$BIN/$name.version" 2>/dev/null)" == "${VERSION_OF[$name]}" ]]; then return 0; fi
  ln -f "$src" "$BIN/$name" 2>/dev/null || cp -f "$src" "$BIN/$name"
  printf '%s\n' "${VERSION_OF[$name]}" >"$BIN/$name.version"
}

CRDS="$CACHE/opentelemetry-operator-$OPERATOR_VERSION/crds"
crds_present() { [[ -s "$CRDS/opentelemetry.io_opentelemetrycollectors.yaml" ]]; }

missing=()
for name in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok opentelemetry-operator; do
  install_from_cache "$name" || missing+=("$name")
done
crds_present || missing+=(crds)
STAGES="$CACHE/kwok-$KWOK_VERSION/stages"
[[ -s "$STAGES/pod/fast/pod-ready.yaml" ]] || missing+=(kwok-stages)
# The CRDs and KWOK's stage files beside the binaries.
install_files() {
  rm -rf "$OUT/crds" "$OUT/kwok-stages"
  mkdir -p "$OUT/crds" "$OUT/kwok-stages"
  cp -f "$CRDS"/*.yaml "$OUT/crds/"
  cp -rf "$STAGES"/. "$OUT/kwok-stages/"
}
if [[ ${#missing[@]} -eq 0 ]]; then
  install_files
  say "up to date in $BIN: Kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, KWOK $KWOK_VERSION, OpenTelemetry Operator $OPERATOR_VERSION"
  exit 0
fi

if ! GO_BIN="$(find_go)"; then
  msg="no Go toolchain (go on PATH, /usr/local/go/bin/go or \$GO): the test cluster cannot be built (${missing[*]} missing), and the Kubernetes suites will skip"
  if [[ "${PHOENIX_CLUSTER_REQUIRED:-}" == "1" ]]; then
    say "$msg" >&2
    exit 1
  fi
  say "$msg"
  exit 0
fi
export PATH="$(dirname "$GO_BIN"):$PATH"
export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0
MODCACHE="$("$GO_BIN" env GOMODCACHE)"
say "go: $GO_BIN ($("$GO_BIN" env GOVERSION)); to build: ${missing[*]}"

needs() { local n; for n in "${missing[@]}"; do [[ "$n" == "$1" ]] && return 0; done; return 1; }

# A wrapper module per upstream (their go.mod files carry replace directives that only apply when they
# are the main module), kept in the cache so `go mod tidy` runs once per version.
wrapper() { # dir go.mod-text tools.go-imports...
  local dir="$1" mod="$2"
  shift 2
  mkdir -p "$dir"
  if [[ ! -f "$dir/go.sum" || "$(cat "$dir/go.mod")" != "$mod" ]]; then
    printf '%s\n' "$mod" >"$dir/go.mod"
    { printf '//go:build tools\n\npackage tools\n\nimport (\n'; printf '\t_ "%s"\n' "$@"; printf ')\n'; } >"$dir/tools.go"
    rm -f "$dir/go.sum"
    (cd "$dir" && run_step "resolving modules in $dir" "$GO_BIN" mod tidy)
  fi
}

build_into_cache() { # name dir package [ldflags]
  local name="$1" dir="$2" pkg="$3" ldflags="${4:-}" dest
  dest="$(cached "$name")"
  mkdir -p "$(dirname "$dest")"
  (cd "$dir" && run_step "building $name ${VERSION_OF[$name]}" \
    "$GO_BIN" build -trimpath -ldflags "-s -w $ldflags" -o "$dest.tmp" "$pkg")
  mv -f "$dest.tmp" "$dest"
  install_from_cache "$name"
}

started=$SECONDS

if needs etcd; then
  dir="$CACHE/src/etcd-$ETCD_VERSION"
  wrapper "$dir" "module example.local/phoenix-etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION" go.etcd.io/etcd/server/v3
  build_into_cache etcd "$dir" go.etcd.io/etcd/server/v3
fi

if needs kwok || needs kwok-stages; then
  dir="$CACHE/src/kwok-$KWOK_VERSION"
  wrapper "$dir" "module example.local/phoenix-kwok

go 1.26.0

require sigs.k8s.io/kwok $KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
  needs kwok && build_into_cache kwok "$dir" sigs.k8s.io/kwok/cmd/kwok
  # The kwok binary has no stages of its own (kwokctl adds them): the ones kwokctl uses ship in the module.
  (cd "$dir" && "$GO_BIN" mod download sigs.k8s.io/kwok@$KWOK_VERSION)
  rm -rf "$STAGES" && mkdir -p "$STAGES"
  cp -r "$MODCACHE/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage/." "$STAGES/"
  chmod -R u+w "$STAGES"
fi

if needs kube-apiserver || needs kube-controller-manager || needs kube-scheduler || needs kubectl; then
  dir="$CACHE/src/kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$dir"
  (cd "$dir" && run_step "downloading k8s.io/kubernetes $KUBERNETES_VERSION" "$GO_BIN" mod download k8s.io/kubernetes@$KUBERNETES_VERSION)
  upstream="$MODCACHE/cache/download/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.mod"
  # k8s.io/kubernetes replaces its staging modules with ./staging/…; the wrapper points them at their
  # published versions.
  mod="$(
    printf 'module example.local/phoenix-kubernetes\n\ngo 1.26.0\n\ngodebug default=go1.26\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBERNETES_VERSION"
    grep -oE '^\s+k8s.io/[a-z0-9-]+ => ./staging/' "$upstream" | awk -v sv="$STAGING_VERSION" '{print "\t"$1" => "$1" "sv}'
    printf ')'
  )"
  wrapper "$dir" "$mod" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  minor="${KUBERNETES_VERSION#v1.}"
  minor="${minor%%.*}"
  # Without the version stamp the binaries call themselves v0.0.0-master and kubectl refuses the server.
  stamp="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=2026-01-01T00:00:00Z -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  say "the Kubernetes binaries take about 45 min from a cold Go cache on 2 cores (kube-apiserver is most of it)"
  for name in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    needs "$name" && build_into_cache "$name" "$dir" "k8s.io/kubernetes/cmd/$name" "$stamp"
  done
fi

if needs opentelemetry-operator || needs crds; then
  dir="$CACHE/src/opentelemetry-operator-$OPERATOR_VERSION"
  # `go install …@version` fails here (the proxy refuses the module's version list); a wrapper works.
  wrapper "$dir" "module example.local/phoenix-operator

go 1.26.0

require github.com/open-telemetry/opentelemetry-operator $OPERATOR_VERSION" \
    github.com/open-telemetry/opentelemetry-operator \
    github.com/open-telemetry/opentelemetry-operator/apis/v1alpha1 \
    github.com/open-telemetry/opentelemetry-operator/apis/v1beta1
  needs opentelemetry-operator && build_into_cache opentelemetry-operator "$dir" github.com/open-telemetry/opentelemetry-operator
  if needs crds; then
    # controller-gen in a module of its own: beside the operator, MVS would lift k8s.io/api and change
    # the generated schema.
    gen="$CACHE/src/controller-gen-$CONTROLLER_GEN_VERSION"
    wrapper "$gen" "module example.local/phoenix-controller-gen

go 1.26.0

require sigs.k8s.io/controller-tools $CONTROLLER_GEN_VERSION" sigs.k8s.io/controller-tools/cmd/controller-gen
    if [[ ! -x "$(cached controller-gen)" ]]; then build_into_cache controller-gen "$gen" sigs.k8s.io/controller-tools/cmd/controller-gen; fi
    rm -rf "$CRDS.tmp"
    mkdir -p "$CRDS.tmp"
    # The options of the operator's own `make manifests`; the result equals its config/crd/bases.
    (cd "$dir" && run_step "generating the operator's CRDs with controller-gen $CONTROLLER_GEN_VERSION" \
      "$(cached controller-gen)" crd:generateEmbeddedObjectMeta=true,maxDescLen=0 \
      paths=github.com/open-telemetry/opentelemetry-operator/apis/... output:crd:dir="$CRDS.tmp")
    rm -rf "$CRDS"
    mv "$CRDS.tmp" "$CRDS"
  fi
fi

install_files
say "built ${missing[*]} in $((SECONDS - started)) s; binaries in $BIN"
