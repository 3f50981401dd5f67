#!/usr/bin/env bash
# A service mesh on loopback, without root or Kubernetes: a consumer app talks
# plain HTTP to its sidecar on 127.0.0.1:15001; that sidecar carries each
# request over mutual TLS to the provider's sidecar, which checks the
# consumer's SPIFFE identity and balances requests over two provider replicas.
# The certificates are made here with openssl (examples/demo/mesh-pki.sh:
# one CA, one SPIFFE ID each).
#
#   examples/mesh-demo.sh            runs until Ctrl-C, one request a second
#   examples/mesh-demo.sh --smoke    checks the spread over both replicas, the
#                                    metrics and a wrong identity being refused,
#                                    then exits 0
#
# Options: --port PORT for the consumer's sidecar (default 15001; --smoke
# takes a free one). SIDECAR_BIN=PATH uses a built binary instead of building.
# The same flags, as Pods: examples/mesh-consumer.yaml, examples/mesh-provider.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,15s/^# \{0,1\}//p' "$0" >&2
  exit 2
}
smoke=false port=15001
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=true; shift ;;
    --port) port=$2; shift 2 ;;
    *) usage ;;
  esac
done
$smoke && port=0

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold= plain=; fi
say() { printf '%smesh:%s %s\n' "$bold" "$plain" "$*"; }
die() { echo "mesh: $*" >&2; exit 1; }

for tool in openssl curl; do
  command -v "$tool" >/dev/null || die "needs $tool; run: sudo apt-get update && sudo apt-get install -y --no-install-recommends $tool"
done
if [ -n "${SIDECAR_BIN:-}" ]; then
  bin=$SIDECAR_BIN
else
  command -v cargo >/dev/null || die "needs the Rust toolchain (or SIDECAR_BIN=PATH)"
  say "building sidecar (release; the first build takes a few minutes)"
  cargo build --release
  bin=target/x86_64-unknown-linux-gnu/release/sidecar
fi

work=$(mktemp -d -t sidecar-mesh-XXXXXX)
cleanup() {
  local pids
  pids=$(jobs -p)
  [ -z "$pids" ] || kill $pids 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits (at most 60 s) until FILE has a line matching PATTERN, and prints it.
wait_line() {
  local file=$1 pattern=$2 i
  for i in $(seq 600); do
    if grep -m1 -E -- "$pattern" "$file" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "mesh: timed out waiting for /$pattern/ in $file:" >&2
  cat "$file" >&2 || true
  return 1
}
addr_of() { sed -E 's/.*addr="?([0-9.:]+).*/\1/'; }

# Starts `sidecar APPLET ARGS…` as NAME in the background, its log in
# $work/NAME.log; sets admin[NAME] and listen[NAME].
declare -A admin listen
start() {
  local name=$1 applet=$2 ready=$3
  shift 3
  "$bin" "$applet" --admin-addr 127.0.0.1:0 "$@" 2>"$work/$name.log" &
  admin[$name]=$(wait_line "$work/$name.log" "admin server listening" | addr_of)
  listen[$name]=$(wait_line "$work/$name.log" "$ready" | addr_of)
}

# --- certificates: one CA; the provider, the consumer and an intruder -------
pki=$work/pki
examples/demo/mesh-pki.sh "$pki" \
  provider=api.shop.svc.cluster.local=spiffe://cluster.local/ns/shop/sa/api \
  consumer=web.shop.svc.cluster.local=spiffe://cluster.local/ns/shop/sa/web \
  intruder=teller.bank.svc.cluster.local=spiffe://cluster.local/ns/bank/sa/teller
say "certificates in $pki: provider spiffe://cluster.local/ns/shop/sa/api, consumer .../sa/web, intruder spiffe://cluster.local/ns/bank/sa/teller"

# --- the provider: two replicas, and its sidecar terminating mTLS ------------
# Round-robin makes the spread plain to see; without --lb, HTTP requests go
# by peak-EWMA latency (Linkerd's balancer), which favours the faster replica.
for r in 1 2; do
  mkdir -p "$work/replica-$r"
  echo "hello from provider replica-$r" >"$work/replica-$r/index.html"
  start "replica-$r" static-serve "static-serve listening" \
    --root "$work/replica-$r" --listen 127.0.0.1:0
done
start provider-sidecar tcp-proxy "INFO listening addr=" \
  --listen 127.0.0.1:0 --upstream "${listen[replica-1]},${listen[replica-2]}" --lb round-robin \
  --tls-server strict --tls-allow-id 'spiffe://cluster.local/ns/shop/sa/*' \
  --tls-cert "$pki/provider.crt" --tls-key "$pki/provider.key" --tls-ca "$pki/ca.crt"
say "provider sidecar on ${listen[provider-sidecar]} (mTLS only, shop/* allowed): metrics at http://${admin[provider-sidecar]}/metrics"

# --- the consumer's sidecar: plain HTTP in on :15001, mTLS out ---------------
start consumer-sidecar tcp-proxy "INFO listening addr=" \
  --listen "127.0.0.1:$port" --upstream "${listen[provider-sidecar]}" \
  --tls-client --tls-upstream-id spiffe://cluster.local/ns/shop/sa/api \
  --tls-cert "$pki/consumer.crt" --tls-key "$pki/consumer.key" --tls-ca "$pki/ca.crt"
consumer=${listen[consumer-sidecar]}
say "consumer sidecar on $consumer: metrics at http://${admin[consumer-sidecar]}/metrics"

# The consumer app: plain HTTP to its sidecar, several requests per
# keep-alive connection (the provider's sidecar balances each request).
app_requests() {
  local n=$1 urls=() i
  for i in $(seq "$n"); do urls+=("http://$consumer/"); done
  curl -sS --max-time 10 "${urls[@]}"
}

# A workload with a certificate from the same CA but another namespace's
# identity, dialling the provider's sidecar directly.
intruder() {
  local host=api.shop.svc.cluster.local p=${listen[provider-sidecar]##*:}
  curl -sS --max-time 10 --cacert "$pki/ca.crt" \
    --cert "$pki/intruder.crt" --key "$pki/intruder.key" \
    --resolve "$host:$p:127.0.0.1" "https://$host:$p/" 2>&1
}

metrics() {
  curl -sS --max-time 10 "http://${admin[$1]}/metrics" | grep -E "^tcp_proxy_($2)" || true
}

show_state() {
  say "provider sidecar: requests per replica, TLS handshakes, refusals"
  metrics provider-sidecar 'http_requests_total|tls_handshakes_total|rejected_connections_total' | sed 's/^/    /'
  say "consumer sidecar: TLS handshakes to the provider"
  metrics consumer-sidecar 'tls_handshakes_total' | sed 's/^/    /'
}

if $smoke; then
  replies=$(app_requests 10)
  r1=$(grep -c replica-1 <<<"$replies" || true)
  r2=$(grep -c replica-2 <<<"$replies" || true)
  say "10 requests on one connection from the consumer app: replica-1 answered $r1, replica-2 answered $r2"
  [ "$r1" -gt 0 ] && [ "$r2" -gt 0 ] || die "requests did not spread over both replicas: $replies"

  out=$(intruder) && die "the intruder got an answer: $out"
  say "intruder (bank/teller) refused: ${out##*curl: }"
  refused=$(metrics provider-sidecar 'rejected_connections_total.*reason="tls_identity"' | awk '{print $2}')
  [ "${refused:-0}" -ge 1 ] || die "the refusal was not counted"

  served=$(metrics provider-sidecar 'http_requests_total' | awk '{s+=$2} END {print s+0}')
  [ "$served" -ge 10 ] || die "the provider sidecar counted $served requests, not 10"
  handshakes=$(metrics consumer-sidecar 'tls_handshakes_total.*result="ok"' | awk '{s+=$2} END {print s+0}')
  [ "$handshakes" -ge 1 ] || die "the consumer sidecar counted no mTLS handshake"
  show_state
  say "smoke: requests spread over both replicas through mTLS, metrics counted them, the wrong identity was refused"
  exit 0
fi

say "the consumer app sends a request a second through $consumer; Ctrl-C stops"
for i in $(seq 100000); do
  reply=$(app_requests 1 || true)
  say "request $i: $reply"
  if [ $((i % 10)) -eq 0 ]; then
    out=$(intruder) || true
    say "intruder (bank/teller) tried the provider directly: ${out##*curl: }"
    show_state
  fi
  sleep 1
done
