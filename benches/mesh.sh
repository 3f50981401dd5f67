#!/usr/bin/env bash
# The mesh hop with mutual TLS, two ways, side by side in one run on loopback:
#   sidecar   h2load → tcp-proxy (plain in, --tls-client) → mTLS →
#             tcp-proxy (--tls-server strict) → nginx
#   haproxy   h2load → haproxy (mode http) → mTLS (ssl crt, verify required) →
#             haproxy (bind ssl, verify required) → nginx
#   direct    h2load → nginx
# for HTTP/1.1 keep-alive and HTTP/2 (h2c from the client, h2 over mTLS):
#   saturation   requests/s with 16 connections (h2: 10 streams each)
#   fixed rate   1,000 req/s (10 one-connection h2load --rps clients) for
#                BENCH_SECONDS, best of BENCH_ROUNDS (3): p50/p99 and what
#                each chain adds to direct
#   memory       RSS of each sidecar idle, and the most seen at 1,000 req/s
# Usage: benches/mesh.sh [path/to/sidecar]   (needs h2load nginx haproxy openssl)
# Each sidecar runs on one thread (tcp-proxy's default, --concurrency 1), as
# each HAProxy here (nbthread 1); TCP_PROXY_CONCURRENCY=0 gives each sidecar a
# thread per CPU instead.
# Build first: cargo build --release --no-default-features --features tcp-proxy
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

BIN=${1:-${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/sidecar}
[ -x "$BIN" ] || { echo "no binary at $BIN; build with --release first" >&2; exit 2; }
SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
REQS=${BENCH_REQUESTS:-100000}
need h2load nginx haproxy openssl "apt-get install nghttp2-client nginx haproxy openssl"

scratch_dir
tmp=$work


examples/demo/mesh-pki.sh "$tmp/pki" \
  provider=api.shop.svc.cluster.local=spiffe://cluster.local/ns/shop/sa/api \
  consumer=web.shop.svc.cluster.local=spiffe://cluster.local/ns/shop/sa/web
pki=$tmp/pki

# The app: nginx answering a small body, HTTP/1.1 on 7001 and h2c on 7002.
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx.conf" <<EOF
daemon off; master_process off; error_log stderr error; pid $tmp/nginx.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $tmp/nginx; proxy_temp_path $tmp/nginx; fastcgi_temp_path $tmp/nginx;
  uwsgi_temp_path $tmp/nginx; scgi_temp_path $tmp/nginx;
  server { listen 127.0.0.1:7001; location / { return 200 "hello from the app\n"; } }
  server { listen 127.0.0.1:7002 http2; location / { return 200 "hello from the app\n"; } }
}
EOF
nginx -c "$tmp/nginx.conf" -p "$tmp" 2>"$tmp/nginx.log" & pids+=($!)
pid_nginx=$!

# Our chain: provider sidecar on 7101 (h1 app) / 7111 (h2c app), consumer on 7201 / 7211.
sidecar() { # NAME ADMIN ARGS…
  local name=$1 admin=$2
  shift 2
  "$BIN" tcp-proxy --admin-addr "127.0.0.1:$admin" --log-level warn "$@" 2>"$tmp/$name.log" & pids+=($!)
  eval "pid_$name=$!"
}
tls_server=(--tls-server strict --tls-allow-id 'spiffe://cluster.local/ns/shop/sa/*'
  --tls-cert "$pki/provider.crt" --tls-key "$pki/provider.key" --tls-ca "$pki/ca.crt")
tls_client=(--tls-client --tls-upstream-id spiffe://cluster.local/ns/shop/sa/api
  --tls-cert "$pki/consumer.crt" --tls-key "$pki/consumer.key" --tls-ca "$pki/ca.crt")
sidecar provider 7301 --route 127.0.0.1:7101=127.0.0.1:7001 --route 127.0.0.1:7111=127.0.0.1:7002 "${tls_server[@]}"
sidecar consumer 7302 --route 127.0.0.1:7201=127.0.0.1:7101 --route 127.0.0.1:7211=127.0.0.1:7111 "${tls_client[@]}"

# HAProxy's chain: provider on 7401 / 7411, consumer on 7501 / 7511.
cat >"$tmp/haproxy-provider.cfg" <<EOF
global
  maxconn 4000
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend in1
  bind 127.0.0.1:7401 ssl crt $pki/provider.pem ca-file $pki/ca.crt verify required alpn h2,http/1.1
  default_backend app1
frontend in2
  bind 127.0.0.1:7411 ssl crt $pki/provider.pem ca-file $pki/ca.crt verify required alpn h2,http/1.1
  default_backend app2
backend app1
  server app 127.0.0.1:7001
backend app2
  server app 127.0.0.1:7002 proto h2
EOF
cat >"$tmp/haproxy-consumer.cfg" <<EOF
global
  maxconn 4000
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend out1
  bind 127.0.0.1:7501
  default_backend provider1
frontend out2
  bind 127.0.0.1:7511 proto h2
  default_backend provider2
backend provider1
  server p 127.0.0.1:7401 ssl crt $pki/consumer.pem ca-file $pki/ca.crt verify required verifyhost api.shop.svc.cluster.local alpn http/1.1
backend provider2
  server p 127.0.0.1:7411 ssl crt $pki/consumer.pem ca-file $pki/ca.crt verify required verifyhost api.shop.svc.cluster.local alpn h2
EOF
haproxy -db -f "$tmp/haproxy-provider.cfg" >"$tmp/haproxy-provider.log" 2>&1 & pids+=($!)
pid_haproxy_provider=$!
haproxy -db -f "$tmp/haproxy-consumer.cfg" >"$tmp/haproxy-consumer.log" 2>&1 & pids+=($!)
pid_haproxy_consumer=$!
for p in 7001 7002 7101 7111 7201 7211 7401 7411 7501 7511; do wait_port "$p"; done
# One thread per process on both sides: two sidecars, two HAProxy processes.
idle_consumer=$(rss_kib "$pid_consumer") idle_provider=$(rss_kib "$pid_provider")
idle_hc=$(rss_kib "$pid_haproxy_consumer") idle_hp=$(rss_kib "$pid_haproxy_provider")

reqs_per_sec() { sed -nE 's/^finished in .*, ([0-9.]+) req\/s.*/\1/p'; }
# PORT h1|h2 PID… → "req/s cpu sys rest": cpu is the CPU time (user +
# system) the given pids spent per request meanwhile, sys its kernel part,
# and rest what the client (h2load) and the app (nginx) spent, all in
# microseconds per request.
saturate() {
  local port=$1 opts=(-c 16 -m 1 --h1)
  [ "$2" = h2 ] && opts=(-c 16 -m 10)
  shift 2
  local before=0 after=0 sys0=0 sys1=0 app0 app1 p rate client
  for p in "$@"; do before=$((before + $(ticks "$p"))) sys0=$((sys0 + $(sys_ticks "$p"))); done
  app0=$(ticks "$pid_nginx")
  rate=$( { TIMEFORMAT='%U %S'; time h2load -n "$REQS" "${opts[@]}" "http://127.0.0.1:$port/" 2>/dev/null; } 2>"$tmp/h2load.time" | reqs_per_sec)
  app1=$(ticks "$pid_nginx")
  for p in "$@"; do after=$((after + $(ticks "$p"))) sys1=$((sys1 + $(sys_ticks "$p"))); done
  client=$(awk '{print $1 + $2}' "$tmp/h2load.time")
  awk -v rate="$rate" -v t=$((after - before)) -v s=$((sys1 - sys0)) -v a=$((app1 - app0)) \
    -v c="$client" -v hz="$HZ" -v n="$REQS" \
    'BEGIN { us = 1e6 / n; printf "%s %.1f %.1f %.1f\n", rate, t / hz * us, s / hz * us, (a / hz + c) * us }'
}
# PORT h1|h2 PID… → "p50 p99 peak" at 1,000 req/s: p50 and p99 in ms, and
# the most RSS (KiB) the given pids had meanwhile (their high-water marks,
# reset first: sampling RSS with ps would itself disturb the latencies).
# The load is 10 clients of one connection at 100 req/s each, as 10 h2load
# processes started at random moments 1-9 ms apart, so requests arrive
# spread over time. (One h2load with 10 connections at 100 req/s each sends
# its 10 requests in the same instant every 10 ms: 90 % of arrivals came
# under 50 us after another, and its p99 was the time a burst of 10 takes to
# drain, 0.7 ms direct.)
fixed_rate() {
  local port=$1 proto=$2
  shift 2
  local opts=(--h1)
  [ "$proto" = h2 ] && opts=()
  local clients=() i p
  for p in "$@"; do echo 5 >"/proc/$p/clear_refs"; done
  rm -f "$tmp"/rate-*.log
  for i in $(seq 0 9); do
    h2load -c 1 --rps 100 -D "$SECS" "${opts[@]}" --log-file "$tmp/rate-$i.log" "http://127.0.0.1:$port/" >/dev/null 2>&1 &
    clients+=($!)
    sleep "0.00$((RANDOM % 9 + 1))"
  done
  wait "${clients[@]}" || true
  local peak=0
  for p in "$@"; do peak=$(higher "$peak" "$(hwm_kib "$p")"); done
  # The logs' third column: the response time in microseconds.
  cat "$tmp"/rate-*.log | awk '{print $3}' | sort -n | awk -v peak="$peak" '
    { v[NR] = $1 }
    END { printf "%.3f %.3f %d\n", v[int(NR*0.50)]/1000, v[int(NR*0.99)]/1000, peak }'
}
# Each chain's p50 and p99 are the lowest of ROUNDS rounds (lib.sh's
# `lowest`), the chains taking turns.
higher() { echo $(($1 > $2 ? $1 : $2)); }

printf '\n%-28s %12s %12s %12s %8s %18s\n' "saturation (req/s)" direct sidecar haproxy "sc/hap" "proxy CPU us/req"
declare -A where
for proto in h1 h2; do
  if [ $proto = h1 ]; then d=7001 s=7201 h=7501; else d=7002 s=7211 h=7511; fi
  read -r rd _ < <(saturate $d $proto)
  read -r rs cs ss xs < <(saturate $s $proto "$pid_consumer" "$pid_provider")
  read -r rh ch sh xh < <(saturate $h $proto "$pid_haproxy_consumer" "$pid_haproxy_provider")
  printf '%-28s %12s %12s %12s %8s %18s\n' "HTTP/$([ $proto = h1 ] && echo 1.1 keep-alive || echo 2)" \
    "$rd" "$rs" "$rh" "$(ratio "$rs" "$rh")" "$cs / $ch"
  where[$proto]="$rh $cs $ss $xs $ch $sh $xh"
done

# Where the CPU of each chain goes at saturation, and what that allows: the
# client and the app cost the same per request whichever proxies sit
# between them, so 1.5x HAProxy's rate on this machine's CPUs leaves the two
# proxies at most CPUS / (1.5 x rate) - (client + app) per request, kernel
# time (the TCP send and receive of every hop) included.
CPUS=$(nproc)
printf '\n%-28s %24s %24s %14s\n' "CPU at saturation (us/req)" "sidecars user+kernel" "haproxy user+kernel" "1.5x allows"
for proto in h1 h2; do
  read -r rh cs ss xs ch sh xh <<<"${where[$proto]}"
  printf '%-28s %24s %24s %14s\n' "HTTP/$([ $proto = h1 ] && echo 1.1 || echo 2)" \
    "$(awk -v c="$cs" -v s="$ss" 'BEGIN{printf "%.1f + %.1f", c - s, s}') (rest $xs)" \
    "$(awk -v c="$ch" -v s="$sh" 'BEGIN{printf "%.1f + %.1f", c - s, s}') (rest $xh)" \
    "$(awk -v r="$rh" -v x="$xh" -v n="$CPUS" 'BEGIN{printf "%.1f", n * 1e6 / (1.5 * r) - x}')"
done

declare -A peak_rss
printf '\n%-28s %16s %16s %16s %10s %10s\n' "1,000 req/s (ms p50/p99)" direct sidecar haproxy "sc +p99" "hap +p99"
for proto in h1 h2; do
  if [ $proto = h1 ]; then d=7001 s=7201 h=7501; else d=7002 s=7211 h=7511; fi
  d50=- d99=- s50=- s99=- h50=- h99=- speak=0 hpeak=0 rounds=""
  for _ in $(seq "$ROUNDS"); do
    read -r a b _ < <(fixed_rate $d $proto)
    d50=$(lowest "$d50" "$a") d99=$(lowest "$d99" "$b") rounds="$rounds $b"
    read -r a b c < <(fixed_rate $s $proto "$pid_consumer" "$pid_provider")
    s50=$(lowest "$s50" "$a") s99=$(lowest "$s99" "$b") speak=$(higher "$speak" "$c") rounds="$rounds/$b"
    read -r a b c < <(fixed_rate $h $proto "$pid_haproxy_consumer" "$pid_haproxy_provider")
    h50=$(lowest "$h50" "$a") h99=$(lowest "$h99" "$b") hpeak=$(higher "$hpeak" "$c") rounds="$rounds/$b"
  done
  printf '%-28s %16s %16s %16s %10s %10s\n' "HTTP/$([ $proto = h1 ] && echo 1.1 || echo 2)" \
    "$d50/$d99" "$s50/$s99" "$h50/$h99" \
    "$(awk -v a="$s99" -v b="$d99" 'BEGIN{printf "%.3f", a-b}')" \
    "$(awk -v a="$h99" -v b="$d99" 'BEGIN{printf "%.3f", a-b}')"
  echo "  rounds' p99 ms, direct/sidecar/haproxy:$rounds"
  peak_rss[$proto]="$speak $hpeak"
done

printf '\n%-40s %12s %12s\n' "RSS (KiB)" sidecar haproxy
printf '%-40s %12s %12s\n' "idle, consumer side" "$idle_consumer" "$idle_hc"
printf '%-40s %12s %12s\n' "idle, provider side" "$idle_provider" "$idle_hp"
for proto in h1 h2; do
  read -r sp hp <<<"${peak_rss[$proto]}"
  printf '%-40s %12s %12s\n' "most of one process, 1,000 req/s $proto" "$sp" "$hp"
done
printf '\nbinary: %s, %s bytes\n' "$BIN" "$(stat -c %s "$BIN")"
