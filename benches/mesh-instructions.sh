#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: a figure the
# machine's load does not move (unlike req/s on a shared 2-CPU box). The
# same chains as benches/mesh.sh, ours and HAProxy's side by side:
#   plain   h2load → proxy → nginx                      (HTTP/1.1, h2c)
#   mesh    h2load → consumer → mTLS → provider → nginx (HTTP/1.1, h2)
# Each proxy runs under valgrind --tool=callgrind; after a warm-up of 400
# requests (connections, pools, TLS handshakes) its counters are zeroed,
# N requests are sent (4 connections; h2: 10 streams each) and the count is
# divided by N. Everything the process does counts: hyper/h2, rustls,
# tokio, malloc (OpenSSL and HAProxy's own for HAProxy); the kernel does not.
# Usage: benches/mesh-instructions.sh [path/to/sidecar]  (needs valgrind h2load nginx haproxy openssl)
# BENCH_ONLY=REGEX runs only the rows whose label matches (e.g. 'h2').
# BENCH_PROFILE_DIR=DIR keeps each measured profile there (PROTO-ROLE.PID.1) for
# callgrind_annotate --inclusive=yes.
# Build first: cargo build --release --no-default-features --features tcp-proxy
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

BIN=${1:-${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/sidecar}
[ -x "$BIN" ] || { echo "no binary at $BIN; build with --release first" >&2; exit 2; }
N1=${BENCH_H1_REQUESTS:-2000}
N2=${BENCH_H2_REQUESTS:-4000}
need valgrind h2load nginx haproxy openssl "apt-get install valgrind nghttp2-client nginx haproxy openssl"

scratch_dir
tmp=$work

examples/demo/mesh-pki.sh "$tmp/pki" \
  provider=api.shop.svc.cluster.local=spiffe://cluster.local/ns/shop/sa/api \
  consumer=web.shop.svc.cluster.local=spiffe://cluster.local/ns/shop/sa/web >/dev/null
pki=$tmp/pki
APP1=$(free_port) APP2=$(free_port)
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx.conf" <<CONF
daemon off; master_process off; error_log stderr error; pid $tmp/nginx.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $tmp/nginx; proxy_temp_path $tmp/nginx; fastcgi_temp_path $tmp/nginx;
  uwsgi_temp_path $tmp/nginx; scgi_temp_path $tmp/nginx;
  server { listen 127.0.0.1:$APP1; location / { return 200 "hello from the app\n"; } }
  server { listen 127.0.0.1:$APP2 http2; location / { return 200 "hello from the app\n"; } }
}
CONF
nginx -c "$tmp/nginx.conf" -p "$tmp" 2>"$tmp/nginx.log" & pids+=($!)
wait_port "$APP1"; wait_port "$APP2"

# Starts "$@" under callgrind; its PID in $vg.
callgrind() {
  local name=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$tmp/$name.%p" --dump-instr=no "$@" \
    >"$tmp/$name.log" 2>&1 &
  vg=$!
  pids+=($vg)
}
# Valgrind starts slowly: up to a minute before the port is bound.
wait_vg_port() {
  local _
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}
sidecar() { callgrind "$1" "$BIN" tcp-proxy --admin-addr off --log-level warn "${@:2}"; }
haproxy_cfg() { # NAME BODY → file
  printf 'global\n  maxconn 4000\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n%s\n' "$2" >"$tmp/$1.cfg"
  echo "$tmp/$1.cfg"
}

# measure PROTO N PORT PID… → instructions per request of each PID, in order
measure() {
  local proto=$1 n=$2 port=$3 p total
  shift 3
  local opts=(--h1 -c 4 -m 1)
  [ "$proto" = h2 ] && opts=(-c 4 -m 10)
  h2load -n 400 "${opts[@]}" "http://127.0.0.1:$port/" >/dev/null 2>&1
  for p in "$@"; do callgrind_control --zero "$p" >/dev/null 2>&1; done
  h2load -n "$n" "${opts[@]}" "http://127.0.0.1:$port/" >"$tmp/h2load.out" 2>&1
  grep -q " 0 failed" "$tmp/h2load.out" || { cat "$tmp/h2load.out" >&2; exit 1; }
  for p in "$@"; do callgrind_control --dump=measured "$p" >/dev/null 2>&1; done
  for p in "$@"; do
    total=$(awk '/^summary:/ {print $2}' "$tmp"/*."$p".1)
    if [ -n "${BENCH_PROFILE_DIR:-}" ]; then
      mkdir -p "$BENCH_PROFILE_DIR"
      for f in "$tmp"/*."$p".1; do cp "$f" "$BENCH_PROFILE_DIR/$proto-${f##*/}"; done
    fi
    printf ' %8d' $((total / n))
  done
}

tls_server=(--tls-server strict --tls-allow-id 'spiffe://cluster.local/ns/shop/sa/*'
  --tls-cert "$pki/provider.crt" --tls-key "$pki/provider.key" --tls-ca "$pki/ca.crt")
tls_client=(--tls-client --tls-upstream-id spiffe://cluster.local/ns/shop/sa/api
  --tls-cert "$pki/consumer.crt" --tls-key "$pki/consumer.key" --tls-ca "$pki/ca.crt")
run() { # LABEL PROTO → one row: ours (plain | consumer provider) and HAProxy's
  local label=$1 proto=$2 n=$N1 app=$APP1
  [[ -z "${BENCH_ONLY:-}" || "$label" =~ $BENCH_ONLY ]] || return 0
  [ "$proto" = h2 ] && n=$N2 app=$APP2
  local a b c d h2opt="" bproto="" alpn=http/1.1
  [ "$proto" = h2 ] && h2opt=" proto h2" bproto=" proto h2" alpn=h2
  printf '%-22s' "$label"
  if [ "$3" = plain ]; then
    a=$(free_port); sidecar proxy --route "127.0.0.1:$a=127.0.0.1:$app"; s=$vg; wait_vg_port "$a"
    ours=$(measure "$proto" "$n" "$a" "$s")
    b=$(free_port)
    callgrind hap haproxy -db -f "$(haproxy_cfg plain "frontend f
  bind 127.0.0.1:$b$h2opt
  default_backend b
backend b
  server s 127.0.0.1:$app$bproto")"; h=$vg; wait_vg_port "$b"
    theirs=$(measure "$proto" "$n" "$b" "$h")
    printf '%18s %18s\n' "$ours" "$theirs"
    kill "$s" "$h"
  else
    a=$(free_port) b=$(free_port)
    sidecar provider --route "127.0.0.1:$a=127.0.0.1:$app" "${tls_server[@]}"; sp=$vg
    sidecar consumer --route "127.0.0.1:$b=127.0.0.1:$a" "${tls_client[@]}"; sc=$vg
    wait_vg_port "$a"; wait_vg_port "$b"
    ours=$(measure "$proto" "$n" "$b" "$sc" "$sp")
    c=$(free_port) d=$(free_port)
    callgrind hprov haproxy -db -f "$(haproxy_cfg hprov "frontend f
  bind 127.0.0.1:$c ssl crt $pki/provider.pem ca-file $pki/ca.crt verify required alpn h2,http/1.1
  default_backend b
backend b
  server s 127.0.0.1:$app$bproto")"; hp=$vg
    callgrind hcons haproxy -db -f "$(haproxy_cfg hcons "frontend f
  bind 127.0.0.1:$d$h2opt
  default_backend b
backend b
  server p 127.0.0.1:$c ssl crt $pki/consumer.pem ca-file $pki/ca.crt verify required verifyhost api.shop.svc.cluster.local alpn $alpn")"; hc=$vg
    wait_vg_port "$c"; wait_vg_port "$d"
    theirs=$(measure "$proto" "$n" "$d" "$hc" "$hp")
    printf '%18s %18s\n' "$ours" "$theirs"
    kill "$sc" "$sp" "$hc" "$hp"
  fi
}

echo "# instructions per request (callgrind), $(date -u +%F), binary $BIN"
printf '%-22s %18s %18s\n' "" "sidecar" "haproxy"
printf '%-22s %18s %18s\n' "" "(consumer provider)" "(consumer provider)"
run "plain HTTP/1.1" h1 plain
run "plain h2c" h2 plain
run "mTLS hop HTTP/1.1" h1 mesh
run "mTLS hop h2" h2 mesh
