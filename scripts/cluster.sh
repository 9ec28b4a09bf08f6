#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for the Kubernetes deployer's tests and for trying Phoenix
# against a cluster without one: `npm run cluster:up` / `npm run cluster:down`.
#
#   up                 builds or finds the binaries (scripts/build-cluster.sh), then starts etcd,
#                      kube-apiserver (serving certs, service-account keys, RBAC), kube-controller-manager,
#                      kube-scheduler and KWOK with $PHOENIX_CLUSTER_NODES fake nodes (default 10), installs
#                      the OpenTelemetry Operator's CRDs and runs the operator (webhooks off). Writes
#                      .phoenix-cluster/kubeconfig and prints the `export KUBECONFIG=…` line.
#   down               stops every process `up` started (KWOK first, etcd last) and removes its folder.
#   restart-apiserver  stops kube-apiserver and starts it again with the same flags (a fault test).
#   nodes N            makes the fake nodes exactly kwok-node-0 … kwok-node-<N-1> (adds or deletes) and
#                      waits until they are Ready.
#   status             prints the processes and whether the API server is ready.
#
# Processes, data, certificates and logs live in a temporary folder (its path is in
# .phoenix-cluster/run/tmpdir); pids in .phoenix-cluster/run. The ports are loopback only:
# etcd 23791/23801/23811, kube-apiserver 16443, controller-manager 10257, scheduler 10259, KWOK 10247,
# operator 18380/18381.
#
# Nodes: kwok-node-<i>, labelled as a node pool would be (pool=otel-agents, node-group=g<i/10>,
# topology.kubernetes.io/zone=zone-<a|b|c>, kubernetes.io/os=linux, node.kubernetes.io/instance-type)
# and tainted dedicated=otel:NoSchedule. Environment: PHOENIX_CLUSTER_NODES, PHOENIX_CLUSTER_OPERATOR
# (0 = don't run the operator), PHOENIX_CLUSTER_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${PHOENIX_CLUSTER_DIR:-$ROOT/.phoenix-cluster}"
BIN="$OUT/bin"
RUN="$OUT/run"
NODES="${PHOENIX_CLUSTER_NODES:-10}"
APISERVER_PORT=16443
SERVER="https://127.0.0.1:$APISERVER_PORT"

say() { printf '[cluster] %s\n' "$*"; }
die() { printf '[cluster] %s\n' "$*" >&2; exit 1; }

tmpdir() { cat "$RUN/tmpdir" 2>/dev/null || true; }
pid_of() { cat "$RUN/$1.pid" 2>/dev/null || true; }
alive() { local p; p="$(pid_of "$1")"; [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }

# Starts a process in the background with its output in <tmp>/<name>.log and its pid in run/<name>.pid;
# its command line is kept in run/<name>.cmd for a restart.
start() { # name command...
  local name="$1"
  shift
  printf '%q ' "$@" >"$RUN/$name.cmd"
  setsid "$@" >>"$(tmpdir)/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

stop() { # name
  local name="$1" p
  p="$(pid_of "$name")"
  [[ -n "$p" ]] || return 0
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$p" 2>/dev/null; then
      say "$name ($p) did not stop in 10 s; killing it"
      kill -KILL "$p" 2>/dev/null || true
    fi
  fi
  rm -f "$RUN/$name.pid"
}

wait_for() { # what seconds command...
  local what="$1" seconds="$2" i
  shift 2
  for ((i = 0; i < seconds * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what not ready after $seconds s (logs in $(tmpdir))"
}

readyz() { curl -fsk --max-time 2 "$1" | grep -qx ok; }

kubectl_() { "$BIN/kubectl" --kubeconfig="$OUT/kubeconfig" "$@"; }

kubeconfig() { # file user cert key
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: phoenix-test
  cluster:
    server: $SERVER
    certificate-authority: $2/ca.crt
users:
- name: $3
  user:
    client-certificate: $2/$3.crt
    client-key: $2/$3.key
contexts:
- name: phoenix-test
  context: {cluster: phoenix-test, user: $3}
current-context: phoenix-test
EOF
}

pki() { # dir
  local d="$1"
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.crt" -days 3650 -subj /CN=phoenix-test-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$d/apiserver.key" -out "$d/apiserver.csr" -subj /CN=kube-apiserver 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' >"$d/apiserver.ext"
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -out "$d/apiserver.crt" -days 3650 -extfile "$d/apiserver.ext" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$d/client.ext"
  local user subject
  for user in admin kube-controller-manager kube-scheduler kwok operator; do
    case "$user" in
      admin) subject="/O=system:masters/CN=admin" ;;
      kube-controller-manager | kube-scheduler) subject="/CN=system:$user" ;;
      *) subject="/O=system:masters/CN=$user" ;;
    esac
    openssl req -newkey rsa:2048 -nodes -keyout "$d/$user.key" -out "$d/$user.csr" -subj "$subject" 2>/dev/null
    openssl x509 -req -in "$d/$user.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -out "$d/$user.crt" -days 3650 -extfile "$d/client.ext" 2>/dev/null
  done
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

# The nodes as one List: a pool's labels and taint, and KWOK's annotation (KWOK manages only those).
nodes_yaml() { # from to
  local i zones=(a b c)
  printf 'apiVersion: v1\nkind: List\nitems:\n'
  for ((i = $1; i < $2; i++)); do
    cat <<EOF
- apiVersion: v1
  kind: Node
  metadata:
    name: kwok-node-$i
    annotations: {kwok.x-k8s.io/node: fake}
    labels:
      type: kwok
      pool: otel-agents
      node-group: g$((i / 10))
      kubernetes.io/hostname: kwok-node-$i
      kubernetes.io/os: linux
      kubernetes.io/arch: amd64
      node.kubernetes.io/instance-type: m6i.large
      topology.kubernetes.io/zone: zone-${zones[$((i % 3))]}
  spec:
    taints: [{key: dedicated, value: otel, effect: NoSchedule}]
EOF
  done
}

start_apiserver() {
  local t
  t="$(tmpdir)"
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:23791 --bind-address=127.0.0.1 --secure-port=$APISERVER_PORT \
    --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
    --tls-cert-file="$t/pki/apiserver.crt" --tls-private-key-file="$t/pki/apiserver.key" \
    --client-ca-file="$t/pki/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$t/pki/sa.pub" --service-account-signing-key-file="$t/pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --authorization-mode=Node,RBAC \
    --max-requests-inflight=1000 --max-mutating-requests-inflight=500
}

up() {
  if alive kube-apiserver && readyz "$SERVER/readyz"; then
    say "already up: export KUBECONFIG=$OUT/kubeconfig"
    return 0
  fi
  down quiet
  if readyz "$SERVER/readyz"; then
    die "another cluster already serves $SERVER (another checkout's cluster:up?): stop it there first"
  fi
  bash "$ROOT/scripts/build-cluster.sh"
  local b
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
    [[ -x "$BIN/$b" ]] || die "no $b in $BIN (see the build's message above): the test cluster cannot start"
  done
  command -v openssl >/dev/null || die "openssl is needed for the cluster's certificates"
  command -v curl >/dev/null || die "curl is needed to see the cluster's processes become ready"
  local began=$SECONDS t
  mkdir -p "$RUN"
  t="$(mktemp -d "${TMPDIR:-/tmp}/phoenix-cluster.XXXXXX")"
  echo "$t" >"$RUN/tmpdir"
  pki "$t/pki"
  kubeconfig "$OUT/kubeconfig" "$t/pki" admin
  kubeconfig "$t/kcm.kubeconfig" "$t/pki" kube-controller-manager
  kubeconfig "$t/sched.kubeconfig" "$t/pki" kube-scheduler
  kubeconfig "$t/kwok.kubeconfig" "$t/pki" kwok
  kubeconfig "$t/operator.kubeconfig" "$t/pki" operator

  start etcd "$BIN/etcd" --data-dir "$t/etcd" --name default \
    --listen-client-urls http://127.0.0.1:23791 --advertise-client-urls http://127.0.0.1:23791 \
    --listen-peer-urls http://127.0.0.1:23801 --initial-advertise-peer-urls http://127.0.0.1:23801 \
    --initial-cluster default=http://127.0.0.1:23801 --listen-metrics-urls http://127.0.0.1:23811 \
    --quota-backend-bytes=4294967296
  wait_for etcd 30 readyz http://127.0.0.1:23811/readyz
  start_apiserver
  wait_for kube-apiserver 90 readyz "$SERVER/readyz"
  say "API server ready ($((SECONDS - began)) s)"
  # The client QPS matters at scale: at the default 20, a 1,000-node DaemonSet takes minutes.
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$t/kcm.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10257 --service-account-private-key-file="$t/pki/sa.key" \
    --root-ca-file="$t/pki/ca.crt" --use-service-account-credentials=true --leader-elect=false \
    --kube-api-qps=500 --kube-api-burst=1000
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$t/sched.kubeconfig" --bind-address=127.0.0.1 \
    --secure-port=10259 --leader-elect=false --kube-api-qps=500 --kube-api-burst=1000
  wait_for kube-controller-manager 60 readyz https://127.0.0.1:10257/healthz
  wait_for kube-scheduler 60 readyz https://127.0.0.1:10259/healthz

  # KWOK has no stages of its own; these are the ones kwokctl uses. Leases (40 s) keep nodes Ready.
  local stages="$t/kwok-stages.yaml" modcache first=1 f
  modcache="$(go env GOMODCACHE 2>/dev/null || echo "$HOME/go/pkg/mod")"
  : >"$stages"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [[ -f "$OUT/kwok-stages/$f" ]] || die "no KWOK stage $f in $OUT/kwok-stages (rerun npm run cluster:build)"
    ((first)) || printf -- '---\n' >>"$stages"
    first=0
    cat "$OUT/kwok-stages/$f" >>"$stages"
  done
  start kwok "$BIN/kwok" --kubeconfig="$t/kwok.kubeconfig" --config="$stages" --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake --node-lease-duration-seconds=40 \
    --cidr=10.244.0.0/16 --server-address=127.0.0.1:10247
  wait_for kwok 30 readyz http://127.0.0.1:10247/healthz

  # The operator's CRDs, server-side (the collectors CRD is too large for the last-applied annotation).
  kubectl_ apply --server-side --field-manager=phoenix-cluster -f "$OUT/crds" >/dev/null
  kubectl_ wait --for=condition=Established --timeout=60s crd --all >/dev/null

  nodes "$NODES"
  wait_for "the default ServiceAccount" 60 kubectl_ get serviceaccount default -n default

  if [[ "${PHOENIX_CLUSTER_OPERATOR:-1}" != "0" && -x "$BIN/opentelemetry-operator" ]]; then
    KUBECONFIG="$t/operator.kubeconfig" ENABLE_WEBHOOKS=false start opentelemetry-operator \
      "$BIN/opentelemetry-operator" --enable-webhooks=false --metrics-addr=127.0.0.1:18380 \
      --health-probe-addr=127.0.0.1:18381 --enable-leader-election=false
    wait_for opentelemetry-operator 60 readyz http://127.0.0.1:18381/readyz
  fi
  say "up in $((SECONDS - began)) s: Kubernetes $(cat "$BIN/kube-apiserver.version"), KWOK $(cat "$BIN/kwok.version"), $NODES nodes$(alive opentelemetry-operator && echo ", OpenTelemetry Operator $(cat "$BIN/opentelemetry-operator.version")")"
  say "logs in $t"
  echo "export KUBECONFIG=$OUT/kubeconfig"
}

down() {
  local quiet="${1:-}" t name
  t="$(tmpdir)"
  for name in opentelemetry-operator kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop "$name"
  done
  if [[ -n "$t" && -d "$t" && "$t" == */phoenix-cluster.* ]]; then rm -rf "$t"; fi
  rm -rf "$RUN" "$OUT/kubeconfig"
  [[ -n "$quiet" ]] || say "down"
}

# Nodes the DaemonSet controller can use: Ready, and without the not-ready or unreachable taint the node
# lifecycle controller takes off once it sees them Ready (no DaemonSet pod is made on a node before).
usable_nodes() {
  kubectl_ get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {.spec.taints[*].key}{"\n"}{end}' |
    awk '$1 == "True" && !/node\.kubernetes\.io\/(not-ready|unreachable)/' | wc -l
}

nodes() { # count
  local want="$1" have t i end pids=() kept=() selector extra began=$SECONDS
  t="$(tmpdir)"
  have="$(kubectl_ get nodes -l type=kwok -o name | wc -l)"
  if ((want > 0 && have != want)); then
    # Applying the whole range converges whatever an earlier, partial run left. kubectl applies a
    # list one object at a time under its client rate limit: ten lists at once.
    for ((i = 0; i < want; i += 100)); do
      end=$((i + 100 < want ? i + 100 : want))
      nodes_yaml "$i" "$end" >"$t/nodes-$i.yaml"
      kubectl_ apply --server-side --force-conflicts --field-manager=phoenix-cluster -f "$t/nodes-$i.yaml" >/dev/null &
      pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || die "applying the nodes failed"; done
  fi
  # Whole node groups past the count go in one request (a deletecollection by label: kubectl deleting
  # 990 nodes one by one at its client's 5 requests a second takes minutes); the rest of the last
  # group by name.
  for ((i = 0; i < (want + 9) / 10; i++)); do kept+=("g$i"); done
  selector="type=kwok"
  if ((${#kept[@]} > 0)); then selector="$selector,node-group notin ($(IFS=,; echo "${kept[*]}"))"; fi
  if ((have > want)); then
    kubectl_ delete --raw "/api/v1/nodes?labelSelector=$(printf '%s' "$selector" | sed 's/ /%20/g; s/(/%28/g; s/)/%29/g; s/,/%2C/g; s/=/%3D/g')" >/dev/null
  fi
  extra="$(kubectl_ get nodes -l type=kwok -o name | sed -n 's#^node/kwok-node-##p' | awk -v w="$want" '$1 >= w {print "kwok-node-"$1}')"
  # shellcheck disable=SC2086
  if [[ -n "$extra" ]]; then kubectl_ delete node --wait=false $extra >/dev/null; fi
  if ((want > 0)); then
    # One list a look (kubectl wait looks at 1,000 nodes one at a time: minutes).
    local deadline=$((SECONDS + 600))
    until (($(usable_nodes) >= want)); do
      ((SECONDS < deadline)) || die "fewer than $want nodes Ready after 600 s"
      sleep 0.2
    done
  fi
  say "$want nodes Ready ($((SECONDS - began)) s)"
}

restart_apiserver() {
  alive kube-apiserver || die "the API server is not running (npm run cluster:up)"
  stop kube-apiserver
  start_apiserver
  wait_for kube-apiserver 90 readyz "$SERVER/readyz"
  say "API server restarted"
}

status() {
  local name
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler kwok opentelemetry-operator; do
    if alive "$name"; then say "$name: running ($(pid_of "$name"))"; else say "$name: not running"; fi
  done
  if readyz "$SERVER/readyz"; then say "API server ready at $SERVER; export KUBECONFIG=$OUT/kubeconfig"; else say "API server not ready"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  restart-apiserver) restart_apiserver ;;
  status) status ;;
  nodes) [[ "${2:-}" =~ ^[0-9]+$ ]] || die "usage: scripts/cluster.sh nodes N"; nodes "$2" ;;
  *) die "usage: scripts/cluster.sh up|down|nodes N|restart-apiserver|status" ;;
esac
