#!/usr/bin/env bash
# Two tcp-proxy builds against each other on a noisy machine: single-stream
# iperf3 through direct, build A and build B in turn, ROUNDS times, so load
# swings hit all three alike; prints Gbit/s and the CPU ticks each proxy
# spent. Use it before keeping an optimisation (compare the columns, not
# single rows).
# Usage: benches/tcp-proxy-ab.sh OLD_BINARY NEW_BINARY   (env: ROUNDS=5 SECS=3 STREAMS=1)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ $# = 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; }
ROUNDS=${ROUNDS:-5} SECS=${SECS:-3} STREAMS=${STREAMS:-1}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
iperf3 -s -p 5301 >/dev/null 2>&1 & pids+=($!)
"$1" tcp-proxy --admin-addr=127.0.0.1:17992 --log-level=warn --route=127.0.0.1:15301=127.0.0.1:5301 & A=$!; pids+=($A)
"$2" tcp-proxy --admin-addr=127.0.0.1:17993 --log-level=warn --route=127.0.0.1:15302=127.0.0.1:5301 & B=$!; pids+=($B)
for p in 5301 15301 15302; do wait_port "$p"; done
gbps() {
  iperf3 -c 127.0.0.1 -p "$1" -t "$SECS" -P "$STREAMS" -J \
    | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
printf '%8s %8s %8s %8s %8s\n' direct A A-ticks B B-ticks
for _ in $(seq "$ROUNDS"); do
  d=$(gbps 5301)
  a0=$(ticks $A); a=$(gbps 15301); a1=$(ticks $A)
  b0=$(ticks $B); b=$(gbps 15302); b1=$(ticks $B)
  printf '%8s %8s %8s %8s %8s\n' "$d" "$a" "$((a1 - a0))" "$b" "$((b1 - b0))"
done
