#!/usr/bin/env bash
# tcp-proxy against direct connections, HAProxy and socat, side by side on
# loopback, in one run:
#   throughput   iperf3, 1 and 8 streams (tcp-proxy with and without splice)
#   latency      64-byte request/response at a fixed rate over one
#                connection: p50/p99, and what each proxy adds to direct
#   conn rate    new connections per second (connect, 1-byte echo, close)
#   memory       RSS of the proxy holding 10,000 idle connections
# Usage: benches/tcp-proxy.sh [path/to/sidecar]   (needs iperf3 haproxy socat
# python3; installs them with apt-get when missing and running as root)
# Build first: cargo build --release --no-default-features --features tcp-proxy
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

BIN=${1:-${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/sidecar}
[ -x "$BIN" ] || { echo "no binary at $BIN; build with --release first" >&2; exit 2; }
SECS=${BENCH_SECONDS:-5}
LOAD="python3 benches/tcp-proxy-load.py"

for tool in iperf3 haproxy socat python3; do
  if ! command -v "$tool" >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iperf3 haproxy socat python3 >/dev/null
    else
      echo "missing $tool" >&2; exit 2
    fi
  fi
done
# 10k idle connections through a proxy are 20k descriptors in it.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
# Each idle connection is two descriptors in the proxy; stay under the limit
# when it cannot be raised (containers without CAP_SYS_RESOURCE).
FDS=$(ulimit -n)
MAXIDLE=$(( (FDS - 200) / 2 ))
IDLE=${BENCH_IDLE_CONNECTIONS:-$(( MAXIDLE < 10000 ? MAXIDLE : 10000 ))}

scratch_dir
tmp=$work

# Peers: iperf3 server and an echo server.
iperf3 -s -p 5201 >/dev/null 2>&1 & pids+=($!)
$LOAD echo-server 6001 & pids+=($!)

# tcp-proxy (default: plain copies, splice after 1 MiB per direction) and one
# with splice off; a thread per CPU each (--concurrency 0), as HAProxy below.
"$BIN" tcp-proxy --admin-addr=127.0.0.1:15990 --log-level=warn --concurrency=0 \
  --route=127.0.0.1:15201=127.0.0.1:5201 --route=127.0.0.1:16001=127.0.0.1:6001 & pids+=($!)
TP_PID=$!
"$BIN" tcp-proxy --admin-addr=127.0.0.1:15991 --log-level=warn --concurrency=0 --splice-after=0 \
  --route=127.0.0.1:15202=127.0.0.1:5201 & pids+=($!)
TP_PLAIN_PID=$!

cat >"$tmp/haproxy.cfg" <<EOF
global
  maxconn $(( IDLE + 50 ))
  nbthread $(nproc)
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend iperf
  bind 127.0.0.1:25201
  default_backend iperf
backend iperf
  server s1 127.0.0.1:5201
frontend echo
  bind 127.0.0.1:26001
  default_backend echo
backend echo
  server s1 127.0.0.1:6001
EOF
haproxy -f "$tmp/haproxy.cfg" -db >"$tmp/haproxy.log" 2>&1 & pids+=($!)
HA_PID=$!
socat TCP-LISTEN:35201,bind=127.0.0.1,fork,reuseaddr TCP:127.0.0.1:5201 & pids+=($!)
socat TCP-LISTEN:36001,bind=127.0.0.1,fork,reuseaddr TCP:127.0.0.1:6001 & pids+=($!)
for p in 5201 6001 15201 16001 15202 25201 26001 35201 36001; do wait_port $p; done

gbps() { # port streams
  iperf3 -c 127.0.0.1 -p "$1" -t "$SECS" -P "$2" -J \
    | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}

echo "# tcp-proxy bench: $(uname -r), $(nproc) CPUs, ${SECS}s per run, $(date -u +%F)"
echo
echo "## Throughput (iperf3, Gbit/s; ratio to direct)"
printf '%-26s %10s %10s\n' "path" "1 stream" "8 streams"
for row in "direct:5201" "tcp-proxy:15201" "tcp-proxy (no splice):15202" "haproxy:25201" "socat:35201"; do
  name=${row%:*}; port=${row##*:}
  one=$(gbps "$port" 1); eight=$(gbps "$port" 8)
  if [ "$name" = direct ]; then d1=$one; d8=$eight; fi
  printf '%-26s %10s %10s\n' "$name" "$one ($(ratio "$one" "$d1")x)" "$eight ($(ratio "$eight" "$d8")x)"
done

# CPU time the proxy process spends per GiB relayed: unlike Gbit/s, it does
# not depend on what else the machine is running.
echo
echo "## Proxy CPU per GiB relayed (iperf3 -n 4G; ms of user+system CPU, lower is better)"
printf '%-26s %10s %10s\n' "path" "1 stream" "8 streams"
for row in "tcp-proxy:15201:$TP_PID" "tcp-proxy (no splice):15202:$TP_PLAIN_PID" "haproxy:25201:$HA_PID"; do
  IFS=: read -r name port pid <<<"$row"
  out=""
  for streams in 1 8; do
    a=$(ticks "$pid"); iperf3 -c 127.0.0.1 -p "$port" -n 4G -P "$streams" >/dev/null; b=$(ticks "$pid")
    out+=$(printf ' %10s' "$(( (b - a) * 1000 / HZ / 4 ))")
  done
  printf '%-26s%s\n' "$name" "$out"
done

echo
echo "## Latency (64 B request/response, 2000/s, one connection; µs)"
printf '%-12s %8s %8s %12s %12s\n' "path" "p50" "p99" "added p50" "added p99"
for row in "direct:6001" "tcp-proxy:16001" "haproxy:26001" "socat:36001"; do
  name=${row%:*}; port=${row##*:}
  read -r p50 p99 < <($LOAD latency "127.0.0.1:$port" 2000 "$SECS")
  if [ "$name" = direct ]; then b50=$p50; b99=$p99; fi
  printf '%-12s %8s %8s %12s %12s\n' "$name" "$p50" "$p99" \
    "$(python3 -c "print('%+.1f' % ($p50-$b50))")" "$(python3 -c "print('%+.1f' % ($p99-$b99))")"
done

echo
echo "## New connections per second (4 client threads; ratio to direct)"
for row in "direct:6001" "tcp-proxy:16001" "haproxy:26001" "socat:36001"; do
  name=${row%:*}; port=${row##*:}
  r=$($LOAD connrate "127.0.0.1:$port" "$SECS" 4)
  if [ "$name" = direct ]; then base=$r; fi
  printf '%-12s %8s/s (%sx)\n' "$name" "$r" "$(ratio "$r" "$base")"
done

echo
echo "## Memory with $IDLE idle connections (RSS, MiB)"
for row in "tcp-proxy:16001:$TP_PID" "haproxy:26001:$HA_PID"; do
  IFS=: read -r name port pid <<<"$row"
  before=$(rss_kib "$pid")
  mkfifo "$tmp/hold-$name"
  $LOAD idle "127.0.0.1:$port" "$IDLE" <"$tmp/hold-$name" >"$tmp/ready-$name" & holder=$!
  exec 4>"$tmp/hold-$name"
  for _ in $(seq 1200); do grep -q ready "$tmp/ready-$name" 2>/dev/null && break; sleep 0.1; done
  after=$(rss_kib "$pid")
  exec 4>&-
  wait "$holder" || true
  printf '%-12s before %6.1f  with %d idle %6.1f  per connection %.2f KiB\n' "$name" \
    "$(python3 -c "print($before/1024)")" "$IDLE" "$(python3 -c "print($after/1024)")" \
    "$(python3 -c "print(($after-$before)/$IDLE)")"
done
