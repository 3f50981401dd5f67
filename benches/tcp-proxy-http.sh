#!/usr/bin/env bash
# tcp-proxy's HTTP handling against direct and HAProxy (mode http), side by
# side on loopback, in one run:
#   HTTP/1.1 keep-alive   h2load --h1, 16 connections, saturation: req/s, mean latency
#   HTTP/2 (h2c)          h2load, 4 connections x 32 streams, saturation
#   plain TCP             iperf3 1 stream through --protocol auto vs --protocol tcp
#                         (detection must not cost relay throughput)
#   memory                the proxy's RSS after the HTTP runs
# Upstream: nginx (one HTTP/1.1 port, one h2c port) answering a 2-byte body.
# Usage: benches/tcp-proxy-http.sh [path/to/sidecar]   (needs nginx haproxy h2load iperf3)
# Build first: cargo build --release --no-default-features --features tcp-proxy
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

BIN=${1:-${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/sidecar}
[ -x "$BIN" ] || { echo "no binary at $BIN; build with --release first" >&2; exit 2; }
N1=${BENCH_H1_REQUESTS:-60000}
N2=${BENCH_H2_REQUESTS:-120000}
SECS=${BENCH_SECONDS:-5}
need nginx haproxy h2load iperf3 "apt-get install nginx haproxy nghttp2-client iperf3"

scratch_dir
tmp=$work

UP1=$(free_port); UP2=$(free_port); P1=$(free_port); P2=$(free_port); H1=$(free_port)
H2=$(free_port); IP=$(free_port); PA=$(free_port); PT=$(free_port)

mkdir -p "$tmp/nginx"
cat >"$tmp/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; error_log stderr error; pid $tmp/nginx.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $tmp/nginx; proxy_temp_path $tmp/nginx; fastcgi_temp_path $tmp/nginx;
  uwsgi_temp_path $tmp/nginx; scgi_temp_path $tmp/nginx;
  server { listen 127.0.0.1:$UP1; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:$UP2 http2; location / { return 200 "ok"; } }
}
EOF
nginx -c "$tmp/nginx.conf" -p "$tmp" & pids+=($!)

cat >"$tmp/haproxy.cfg" <<EOF
global
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend h1
  bind 127.0.0.1:$H1
  default_backend up1
frontend h2
  bind 127.0.0.1:$H2 proto h2
  default_backend up2
backend up1
  server s1 127.0.0.1:$UP1
backend up2
  server s2 127.0.0.1:$UP2 proto h2
EOF
haproxy -f "$tmp/haproxy.cfg" -db >/dev/null 2>&1 & pids+=($!)

# A thread per CPU for each tcp-proxy (--concurrency 0), as HAProxy takes
# by default.
"$BIN" tcp-proxy --admin-addr=off --log-level=warn --concurrency=0 \
  --route="127.0.0.1:$P1=127.0.0.1:$UP1" --route="127.0.0.1:$P2=127.0.0.1:$UP2" \
  >/dev/null 2>&1 & proxy=$!; pids+=($proxy)

iperf3 -s -p "$IP" >/dev/null 2>&1 & pids+=($!)
"$BIN" tcp-proxy --admin-addr=off --log-level=warn --concurrency=0 --route="127.0.0.1:$PA=127.0.0.1:$IP" \
  >/dev/null 2>&1 & pids+=($!)
"$BIN" tcp-proxy --admin-addr=off --log-level=warn --concurrency=0 --protocol=tcp --route="127.0.0.1:$PT=127.0.0.1:$IP" \
  >/dev/null 2>&1 & pids+=($!)
for p in $UP1 $UP2 $P1 $P2 $H1 $H2 $IP $PA $PT; do wait_port "$p"; done

# h2load's summary: "finished in 1.23s, 48000.00 req/s, ..." and
# "time for request:  min  max  mean ...".
load() { # out-file args...
  local out=$1; shift
  h2load "$@" >"$out" 2>&1
  grep -q " 0 failed" "$out" || { cat "$out" >&2; echo "h2load saw failures" >&2; exit 1; }
}
rps() { awk '/^finished in/ {gsub(",",""); print $4}' "$1"; }
mean() { awk '/^time for request:/ {print $5}' "$1"; }

echo "# tcp-proxy HTTP bench: $(uname -r), $(nproc) CPUs, $(date -u +%F)"
echo
echo "## HTTP/1.1 keep-alive, 16 connections, $N1 requests (req/s; mean latency)"
for who in direct:$UP1 tcp-proxy:$P1 haproxy:$H1; do
  name=${who%%:*}; p=${who##*:}
  load "$tmp/$name.h1" --h1 -c 16 -n "$N1" "http://127.0.0.1:$p/"
  printf '%-10s %10s req/s  mean %s\n' "$name" "$(rps "$tmp/$name.h1")" "$(mean "$tmp/$name.h1")"
done
echo "tcp-proxy / haproxy: $(ratio "$(rps "$tmp/tcp-proxy.h1")" "$(rps "$tmp/haproxy.h1")")x req/s"
echo
echo "## HTTP/2 (h2c), 4 connections x 32 streams, $N2 requests"
for who in direct:$UP2 tcp-proxy:$P2 haproxy:$H2; do
  name=${who%%:*}; p=${who##*:}
  load "$tmp/$name.h2" -c 4 -m 32 -n "$N2" "http://127.0.0.1:$p/"
  printf '%-10s %10s req/s  mean %s\n' "$name" "$(rps "$tmp/$name.h2")" "$(mean "$tmp/$name.h2")"
done
echo "tcp-proxy / haproxy: $(ratio "$(rps "$tmp/tcp-proxy.h2")" "$(rps "$tmp/haproxy.h2")")x req/s"
echo
echo "## RSS of tcp-proxy after the HTTP runs: $(rss_kib "$proxy") KiB"
echo
echo "## Plain TCP, iperf3 1 stream ${SECS}s (Gbit/s): detection on vs off"
gbps() { iperf3 -c 127.0.0.1 -p "$1" -t "$SECS" -J | python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'; }
auto=$(gbps "$PA"); tcp=$(gbps "$PT")
echo "--protocol auto: $auto   --protocol tcp: $tcp   ratio $(ratio "$auto" "$tcp")"
