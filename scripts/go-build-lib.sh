# Shared by the scripts that build Go tools (build-otelcol.sh, build-cluster.sh, install-grpcurl.sh):
# `source` it after defining `say`.

# The go binary: $GO, else go on PATH, else /usr/local/go/bin/go.
find_go() {
  if [[ -n "${GO:-}" ]]; then
    [[ -x "$GO" ]] && { printf '%s\n' "$GO"; return 0; }
    return 1
  fi
  command -v go 2>/dev/null && return 0
  [[ -x /usr/local/go/bin/go ]] && { printf '%s\n' /usr/local/go/bin/go; return 0; }
  return 1
}

# Prints a line every 30 s while a long step runs, so a cold build does not look hung.
heartbeat() { # what
  local what="$1" start=$SECONDS
  # The sleep does not hold stdout, so a pipe (npm run … | tee) closes as soon as the step ends.
  while sleep 30 </dev/null >/dev/null 2>&1; do say "$what: still running ($((SECONDS - start)) s)"; done
}

# Runs a command under a heartbeat and says how long it took.
run_step() { # what command...
  local what="$1" started=$SECONDS
  shift
  say "$what"
  heartbeat "$what" 9>&- &
  local hb=$! rc=0
  "$@" || rc=$?
  kill "$hb" 2>/dev/null || true
  wait "$hb" 2>/dev/null || true
  [[ $rc -eq 0 ]] && say "$what: done in $((SECONDS - started)) s"
  return "$rc"
}
