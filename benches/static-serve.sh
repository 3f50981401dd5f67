#!/usr/bin/env bash
# static-serve vs nginx, side by side in one run, with wrk (Debian packages wrk, nginx).
#
#   benches/static-serve.sh                      # builds the release binary first
#   BIN=path/to/sidecar benches/static-serve.sh  # or uses this one
#
# Both servers get the same number of workers (WORKERS, default: CPU count;
# tokio's TOKIO_WORKER_THREADS for us, worker_processes for nginx), nginx with
# access_log off and sendfile on, static-serve with its defaults (access log
# off). Cases: a 1 KiB file, a 100 KiB file, a 404. Prints requests/s, p99
# latency, server CPU time per request (user+system, all processes/threads:
# steadier than requests/s on a busy machine), RSS after the run, and the
# static-serve/nginx ratios.
# Each case runs ROUNDS times, alternating the servers. For each server the
# round with the most requests/s gives req/s and CPU, and the lowest p99 of
# its rounds is its p99 (a shared machine's noise only ever slows a run down
# and adds latency); every round's req/s ratio and p99 are printed as the
# run's noise.
# The h2 case: h2load over TLS (HTTP/2 by ALPN) for the 1 KiB file, nginx with
# `listen ... ssl http2`, us with --tls-cert/--tls-key (same certificate).
# Last, the memory of IDLE (2000) idle keep-alive connections, each after one
# request.
# Knobs: DURATION (10s), CONNECTIONS (64), THREADS (wrk threads, 2), ROUNDS (3), IDLE.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

need wrk nginx h2load openssl curl "apt-get install wrk nginx nghttp2-client openssl curl"
WORKERS=${WORKERS:-$(nproc)}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
sidecar_bin static-serve

scratch_dir

# nginx's workers drop root for `nobody`: mktemp's 0700 directory would make
# every nginx answer a 403 (as it did in runs before this check existed).
chmod 755 "$work"
mkdir -p "$work/site"
head -c 1024 /dev/urandom > "$work/site/1k.bin"
head -c $((100 * 1024)) /dev/urandom > "$work/site/100k.bin"

NGINX_PORT=$(free_port)
OURS_PORT=$(free_port)
NGINX_TLS_PORT=$(free_port)
OURS_TLS_PORT=$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

cat > "$work/nginx.conf" <<EOF
worker_processes $WORKERS;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  # 404s are not written to the error log either (we log none).
  log_not_found off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $work/tmp-body;
  proxy_temp_path $work/tmp-proxy;
  fastcgi_temp_path $work/tmp-fastcgi;
  uwsgi_temp_path $work/tmp-uwsgi;
  scgi_temp_path $work/tmp-scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $work/site;
  }
  server {
    listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    root $work/site;
  }
}
EOF
nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" &
pids+=($!)
nginx_master=$!

TOKIO_WORKER_THREADS=$WORKERS "$BIN" static-serve --root "$work/site" \
  --listen "127.0.0.1:$OURS_PORT" --admin-addr off --log-level warn &
pids+=($!)
ours=$!
TOKIO_WORKER_THREADS=$WORKERS "$BIN" static-serve --root "$work/site" \
  --listen "127.0.0.1:$OURS_TLS_PORT" --admin-addr off --log-level warn \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" &
pids+=($!)
ours_tls=$!

wait_port "$NGINX_PORT"
wait_port "$OURS_PORT"
wait_port "$NGINX_TLS_PORT"
wait_port "$OURS_TLS_PORT"

# Both servers must give the same answers, or the comparison means nothing.
for case in 1k.bin:200 100k.bin:200 missing:404; do
  for port in "$NGINX_PORT" "$OURS_PORT"; do
    got=$(curl -s -o "$work/got" -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/${case%%:*}")
    want_size=$( [[ ${case#*:} == 200 ]] && stat -c %s "$work/site/${case%%:*}" || echo "${got#* }")
    if [[ $got != "${case#*:} $want_size" ]]; then
      echo "port $port answers $got for /${case%%:*}, not ${case#*:} with the file (see $work)" >&2
      exit 1
    fi
  done
done

# Prints "requests/s p99 cpu-us-per-request" for one wrk run against server PID $2.
measure() {
  local out before after
  before=$(ticks "$2")
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1")
  after=$(ticks "$2")
  local rps p99 reqs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  # In ms, whatever unit wrk chose (us, ms, s).
  p99=$(awk '$1 == "99%" { v = $2 + 0; if ($2 ~ /us$/) v /= 1000; else if ($2 ~ /[0-9]s$/) v *= 1000; printf "%.2f", v }' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$rps $p99 $(awk -v t=$((after - before)) -v r="$reqs" -v hz="$HZ" 'BEGIN {printf "%.1f", t * 1e6 / hz / r}')"
}

# Keeps the round with the most requests/s: "rps p99 cpu".
best() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); print ((x[1] + 0 >= y[1] + 0) ? a : b) }'; }

printf '%-8s %-12s %12s %10s %12s %10s\n' case server "req/s" p99 "CPU us/req" "RSS KiB"
for case in 1k.bin 100k.bin missing; do
  # Warm both (page cache, connection pools) before measuring.
  wrk -t1 -c8 -d1s "http://127.0.0.1:$NGINX_PORT/$case" >/dev/null
  wrk -t1 -c8 -d1s "http://127.0.0.1:$OURS_PORT/$case" >/dev/null
  n_best="0 - -" o_best="0 - -" ratios="" n_p99=- o_p99=- n_p99s="" o_p99s=""
  for _ in $(seq "$ROUNDS"); do
    n=$(measure "http://127.0.0.1:$NGINX_PORT/$case" "$nginx_master")
    o=$(measure "http://127.0.0.1:$OURS_PORT/$case" "$ours")
    n_best=$(best "$n_best" "$n")
    o_best=$(best "$o_best" "$o")
    ratios="$ratios $(awk -v a="${o%% *}" -v b="${n%% *}" 'BEGIN {printf "%.2f", a / b}')"
    read -r _ p _ <<<"$n"; n_p99=$(lowest "$n_p99" "$p"); n_p99s="$n_p99s $p"
    read -r _ p _ <<<"$o"; o_p99=$(lowest "$o_p99" "$p"); o_p99s="$o_p99s $p"
  done
  read -r n_rps _ n_cpu <<<"$n_best"
  read -r o_rps _ o_cpu <<<"$o_best"
  n_rss=$(rss_kib "$nginx_master")
  o_rss=$(rss_kib "$ours")
  printf '%-8s %-12s %12s %8sms %12s %10s\n' "$case" nginx "$n_rps" "$n_p99" "$n_cpu" "$n_rss"
  printf '%-8s %-12s %12s %8sms %12s %10s\n' "$case" static-serve "$o_rps" "$o_p99" "$o_cpu" "$o_rss"
  printf '%-8s %-12s %12s %9sx %12s\n' "$case" "ours/nginx" \
    "$(awk -v a="$o_rps" -v b="$n_rps" 'BEGIN {printf "%.2fx", a / b}')" \
    "$(awk -v a="$o_p99" -v b="$n_p99" 'BEGIN {printf "%.2f", a / b}')" \
    "$(awk -v a="$o_cpu" -v b="$n_cpu" 'BEGIN {printf "%.2fx", a / b}')"
  echo "$case rounds' req/s ratios:$ratios; p99 ms, nginx:$n_p99s, ours:$o_p99s"
done

# HTTP/2 over TLS, 1 KiB file: h2load prints "finished in …, N req/s, …".
h2rate() {
  h2load -c "$CONNECTIONS" -t "$THREADS" -m 10 -D "${DURATION%s}" "$1" 2>&1 |
    awk '/^finished in/ {for (i = 1; i <= NF; i++) if ($(i) == "req/s,") print $(i - 1)}'
}
# Warm-up, and both must answer 200 over h2.
for port in "$NGINX_TLS_PORT" "$OURS_TLS_PORT"; do
  out=$(h2load -c 4 -n 1000 "https://127.0.0.1:$port/1k.bin" 2>&1)
  if ! grep -q 'status codes: 1000 2xx' <<<"$out"; then
    echo "port $port: not 1000 answers 2xx over h2:" >&2
    echo "$out" >&2
    exit 1
  fi
done
n_h2=0 o_h2=0
for _ in $(seq "$ROUNDS"); do
  n_h2=$(awk -v a="$n_h2" -v b="$(h2rate "https://127.0.0.1:$NGINX_TLS_PORT/1k.bin")" 'BEGIN {print (b + 0 > a + 0) ? b : a}')
  o_h2=$(awk -v a="$o_h2" -v b="$(h2rate "https://127.0.0.1:$OURS_TLS_PORT/1k.bin")" 'BEGIN {print (b + 0 > a + 0) ? b : a}')
done
printf '%-8s %-12s %12s\n' "h2-1k" nginx "$n_h2"
printf '%-8s %-12s %12s %10s %12s %10s\n' "h2-1k" static-serve "$o_h2" "" "" "$(rss_kib "$ours_tls")"
printf '%-8s %-12s %12s\n' "h2-1k" "ours/nginx" "$(awk -v a="$o_h2" -v b="$n_h2" 'BEGIN {printf "%.2fx", a / b}')"

# Idle keep-alive connections: IDLE clients each fetch 1k.bin over HTTP/1.1
# and keep the connection open (browsers between page loads); RSS before and
# with them held, per connection.
IDLE=${IDLE:-2000}
hold_idle() { # PORT: opens IDLE connections, prints "ready", holds them until stdin closes
  python3 - "$1" "$IDLE" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /1k.bin HTTP/1.1\r\nHost: bench\r\n\r\n")
    got = b""
    while not (b"\r\n\r\n" in got and len(got.split(b"\r\n\r\n", 1)[1]) >= 1024):
        d = s.recv(65536)
        if not d:
            sys.exit("connection closed before the answer")
        got += d
    conns.append(s)
print("ready", flush=True)
sys.stdin.read()
PY
}
for row in "nginx:$NGINX_PORT:$nginx_master" "static-serve:$OURS_PORT:$ours"; do
  IFS=: read -r name port pid <<<"$row"
  before=$(rss_kib "$pid")
  mkfifo "$work/hold-$name"
  hold_idle "$port" <"$work/hold-$name" >"$work/ready-$name" & holder=$!
  exec 4>"$work/hold-$name"
  for _ in $(seq 600); do grep -q ready "$work/ready-$name" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$work/ready-$name" || { echo "$name: $IDLE idle connections not ready" >&2; exit 1; }
  after=$(rss_kib "$pid")
  exec 4>&-
  wait "$holder" || true
  printf '%-8s %-12s RSS KiB %6d, with %d idle keep-alive connections %6d: %.2f KiB each\n' \
    idle "$name" "$before" "$IDLE" "$after" "$(awk -v a="$after" -v b="$before" -v n="$IDLE" 'BEGIN {print (a - b) / n}')"
done
echo "workers=$WORKERS connections=$CONNECTIONS wrk-threads=$THREADS duration=$DURATION rounds=$ROUNDS (best) $(nginx -v 2>&1)"
