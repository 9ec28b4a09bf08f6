#!/usr/bin/env bash
# Builds the Phoenix collector from otelcol/builder-config.yaml with the OpenTelemetry Collector Builder
# (ocb) into .phoenix-otelcol/ (git-ignored): `npm run build:otelcol`.
#
# - A no-op when the binary is current: the manifest's sha256 is recorded next to the binary, and a build
#   happens only when it differs or the binary is missing.
# - ocb is installed at the manifest's core version into .phoenix-otelcol/bin (GOBIN), so a fresh machine
#   gets it too.
# - Go's module and build caches are the machine's own (GOMODCACHE/GOCACHE are left alone): a cold build
#   takes 12–30 minutes on 2 cores, a warm one about a minute.
# - Without a Go toolchain it says so and exits 0 (the tests that need the collector then skip), unless
#   PHOENIX_OTELCOL_REQUIRED=1, where it fails.
#
# Environment: PHOENIX_OTELCOL_DIR (default <repo>/.phoenix-otelcol), GO (the go binary to use).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MANIFEST="$ROOT/otelcol/builder-config.yaml"
OUT="${PHOENIX_OTELCOL_DIR:-$ROOT/.phoenix-otelcol}"
BINARY="$OUT/phoenix-otelcol"
STAMP="$OUT/phoenix-otelcol.manifest.sha256"

say() { printf '[build:otelcol] %s\n' "$*"; }

# shellcheck source=go-build-lib.sh
source "$ROOT/scripts/go-build-lib.sh"

[[ -f "$MANIFEST" ]] || { say "no manifest at $MANIFEST" >&2; exit 1; }
mkdir -p "$OUT"

# One build at a time per output folder (two shells, or CI and a developer).
exec 9>"$OUT/.lock"
if ! flock -n 9; then
  say "another build holds $OUT/.lock; waiting for it"
  flock 9
fi

WANT="$(sha256sum "$MANIFEST" | cut -d' ' -f1)"
if [[ -x "$BINARY" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  say "up to date: $BINARY ($("$BINARY" --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi

if ! GO_BIN="$(find_go)"; then
  msg="no Go toolchain (go on PATH, /usr/local/go/bin/go or \$GO): the collector is not built, and the tests that need it will skip"
  if [[ "${PHOENIX_OTELCOL_REQUIRED:-}" == "1" ]]; then
    say "$msg" >&2
    exit 1
  fi
  say "$msg"
  exit 0
fi
export PATH="$(dirname "$GO_BIN"):$PATH"
# The machine's own toolchain: never download another one behind the user's back.
export GOTOOLCHAIN=local

# ocb pins otelcol/service to its own version, so it must be the manifest's core version.
OCB_VERSION="$(sed -nE 's#^[[:space:]]*-[[:space:]]*gomod:[[:space:]]*go\.opentelemetry\.io/collector/receiver/otlpreceiver[[:space:]]+(v[0-9.]+).*#\1#p' "$MANIFEST" | head -n1)"
[[ -n "$OCB_VERSION" ]] || { say "cannot read the core version (otlpreceiver's) from $MANIFEST" >&2; exit 1; }
OCB="$OUT/bin/builder"

say "go: $GO_BIN ($("$GO_BIN" env GOVERSION)); module cache $("$GO_BIN" env GOMODCACHE), build cache $("$GO_BIN" env GOCACHE)"


if [[ ! -x "$OCB" ]] || ! "$OCB" version 2>&1 | grep -q " $OCB_VERSION\$"; then
  mkdir -p "$OUT/bin"
  run_step "installing ocb $OCB_VERSION into $OUT/bin" \
    env GOBIN="$OUT/bin" "$GO_BIN" install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION"
fi

# ocb writes the generated sources to the manifest's output_path (./_build), resolved here, in $OUT.
cp "$MANIFEST" "$OUT/builder-config.yaml"
started=$SECONDS
(
  cd "$OUT"
  run_step "building the collector (ocb $OCB_VERSION; a cold build takes 12–30 min, a warm one about a minute)" \
    "$OCB" --config="$OUT/builder-config.yaml"
)
[[ -x "$OUT/_build/phoenix-otelcol" ]] || { say "ocb finished without $OUT/_build/phoenix-otelcol" >&2; exit 1; }
mv -f "$OUT/_build/phoenix-otelcol" "$BINARY.tmp"
mv -f "$BINARY.tmp" "$BINARY"
printf '%s\n' "$WANT" >"$STAMP"
say "built $BINARY in $((SECONDS - started)) s: $("$BINARY" --version)"
