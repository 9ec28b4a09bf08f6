#!/usr/bin/env bash
# Installs grpcurl, the third-party gRPC client the grpcurl tests drive Phoenix with, at a pinned version
# into .phoenix-grpcurl/ (git-ignored) with `go install`: `bash scripts/install-grpcurl.sh`.
#
# - A no-op when .phoenix-grpcurl/grpcurl is already that version.
# - Go's module and build caches are the machine's own: with a cold module cache the first install
#   takes a few minutes on 2 cores (downloads grpc-go and protobuf), later ones seconds.
# - Without a Go toolchain it says so and exits 0 (test/grpcurl.int.test.ts then skips with that reason),
#   unless PHOENIX_GRPCURL_REQUIRED=1, where it fails.
#
# Environment: PHOENIX_GRPCURL_DIR (default <repo>/.phoenix-grpcurl), GO (the go binary to use).
set -euo pipefail

VERSION="v1.9.3"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${PHOENIX_GRPCURL_DIR:-$ROOT/.phoenix-grpcurl}"
BINARY="$OUT/grpcurl"

say() { printf '[install:grpcurl] %s\n' "$*"; }

# shellcheck source=go-build-lib.sh
source "$ROOT/scripts/go-build-lib.sh"

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
if ! flock -n 9; then
  say "another install holds $OUT/.lock; waiting for it"
  flock 9
fi

# grpcurl -version prints "grpcurl v1.9.3".
if [[ -x "$BINARY" ]] && [[ "$("$BINARY" -version 2>&1)" == *"$VERSION"* ]]; then
  say "up to date: $BINARY ($VERSION)"
  exit 0
fi

if ! GO_BIN="$(find_go)"; then
  msg="no Go toolchain (go on PATH, /usr/local/go/bin/go or \$GO): grpcurl is not installed, and the grpcurl tests will skip"
  if [[ "${PHOENIX_GRPCURL_REQUIRED:-}" == "1" ]]; then
    say "$msg" >&2
    exit 1
  fi
  say "$msg"
  exit 0
fi

say "installing github.com/fullstorydev/grpcurl/cmd/grpcurl@$VERSION with $("$GO_BIN" version) into $OUT"
say "(a cold Go module cache takes a few minutes)"
started=$SECONDS
GOBIN="$OUT" GOFLAGS=-mod=mod "$GO_BIN" install -ldflags "-X main.version=$VERSION" \
  "github.com/fullstorydev/grpcurl/cmd/grpcurl@$VERSION"
say "installed $("$BINARY" -version 2>&1) in $((SECONDS - started)) s"
