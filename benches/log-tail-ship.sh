#!/usr/bin/env bash
# log-tail-ship vs rsyslog (imfile → omelasticsearch), side by side in one run.
#
# Both tail the same pre-written file from its beginning and ship every line
# as a _bulk request to the same local Elasticsearch stand-in
# (benches/log-tail-ship-receiver.py, which counts events and answers each
# request as Elasticsearch does, one item per event). Measured from start
# until the receiver has every event: MiB/s and lines/s of log read, CPU
# seconds per MiB (user+system of the shipper), and peak RSS. Prints ratios.
#
# With FORMAT=cri the same messages are written as CRI log lines (each line,
# timestamp and stream included, LINE_BYTES long) under a kubelet pod path,
# and log-tail-ship runs with --format cri; rsyslog has no CRI input, so that
# run prints log-tail-ship alone, to compare with its raw figures.
# The receiver's own CPU time is printed: it must stay well under one core
# (it is one Python process), or it, not the shipper, is the bottleneck.
# With BUFFER=1, log-tail-ship also runs with --buffer-dir (every batch
# written to, fsynced in and read back from the disk buffer), as a row of its
# own in the same run.
#
# usage: [BIN=path/to/sidecar] [FORMAT=raw|cri] [BUFFER=1] benches/log-tail-ship.sh [SIZE_MIB (default 512)] [LINE_BYTES (default 200)]
# needs: rsyslog rsyslog-elasticsearch python3 (Debian packages)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

SIZE_MIB=${1:-512}
LINE_BYTES=${2:-200}
FORMAT=${FORMAT:-raw}
sidecar_bin log-tail-ship
command -v rsyslogd >/dev/null || { echo "rsyslogd missing: apt-get install rsyslog rsyslog-elasticsearch" >&2; exit 1; }

WORK=$(mktemp -d)
RECV_PID=""
SHIP_PID=""
cleanup() {
  [ -n "$SHIP_PID" ] && kill "$SHIP_PID" 2>/dev/null || true
  [ -n "$RECV_PID" ] && kill "$RECV_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

LOG=$WORK/logs/app.log
[ "$FORMAT" = cri ] && LOG=$WORK/pods/shop_web-7d9f_0c1d-22/app/0.log
mkdir -p "$(dirname "$LOG")"
# Lines like an access log, each LINE_BYTES long with its newline, all distinct.
python3 - "$LOG" "$SIZE_MIB" "$LINE_BYTES" "$FORMAT" <<'EOF'
import sys
path, mib, width, fmt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
total = mib << 20
pad = "x" * width
with open(path, "w", buffering=1 << 20) as f:
    n, i = 0, 0
    while n < total:
        head = f'2026-11-26T00:00:00.{i % 1000:03d}Z INFO 10.0.{i % 256}.{i % 199} "GET /api/v1/items/{i} HTTP/1.1" 200 {i % 9999} '
        if fmt == "cri":
            head = f"2026-11-26T00:00:{i // 1000000 % 60:02d}.{i % 1000000:06d}000Z stdout F " + head
        line = (head + pad)[: width - 1] + "\n"
        f.write(line)
        n += len(line)
        i += 1
EOF
LINES=$(wc -l < "$LOG")
BYTES=$(stat -c %s "$LOG")
MIB=$(python3 -c "print($BYTES / 1048576)")
echo "input: $LINES lines, $MIB MiB ($LINE_BYTES-byte lines, $FORMAT); $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"

start_receiver() {
  rm -f "$WORK/port"
  python3 benches/log-tail-ship-receiver.py "$WORK/port" &
  RECV_PID=$!
  for _ in $(seq 1 100); do [ -s "$WORK/port" ] && break; sleep 0.05; done
  PORT=$(cat "$WORK/port")
}

events() { curl -s "http://127.0.0.1:$PORT/stats" | cut -d' ' -f1; }

# Waits until the receiver has every line, then samples the shipper's CPU
# time and peak RSS, and the receiver's CPU time. Prints
# "seconds cpu_seconds rss_kib receiver_cpu_seconds".
measure() {
  local t0=$1 pid=$2
  until [ "$(events)" -ge "$LINES" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "shipper died" >&2; exit 1; }
    sleep 0.05
  done
  local t1 ticks rss
  t1=$(date +%s.%N)
  ticks=$(ticks "$pid")
  rss=$(hwm_kib "$pid")
  rticks=$(ticks "$RECV_PID")
  python3 -c "print($t1 - $t0, $ticks / $HZ, $rss, $rticks / $HZ)"
}

# run_ours RESULT_VAR [EXTRA_FLAGS…]: sets RESULT_VAR to the measure line.
run_ours() {
  local var=$1; shift
  start_receiver
  rm -rf "$WORK/ours"
  local t0; t0=$(date +%s.%N)
  "$BIN" log-tail-ship --admin-addr=off --path "$LOG" --data-dir "$WORK/ours" \
    --format "$FORMAT" --sink elasticsearch --es-url "http://127.0.0.1:$PORT" \
    --batch-max-bytes 8MiB --batch-max-events 40000 --log-level warn "$@" &
  SHIP_PID=$!
  printf -v "$var" '%s' "$(measure "$t0" "$SHIP_PID")"
  kill "$SHIP_PID"; wait "$SHIP_PID" 2>/dev/null || true; SHIP_PID=""
  kill "$RECV_PID"; wait "$RECV_PID" 2>/dev/null || true; RECV_PID=""
}

run_rsyslog() {
  start_receiver
  mkdir -p "$WORK/rsyslog"
  cat > "$WORK/rsyslog.conf" <<EOF
global(workDirectory="$WORK/rsyslog" maxMessageSize="64k")
main_queue(queue.size="200000" queue.dequeueBatchSize="4096")
module(load="imfile")
module(load="omelasticsearch")
template(name="ecs" type="list" option.jsonf="on") {
  property(outname="@timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
  property(outname="log.file.path" name="\$!metadata!filename" format="jsonf")
  property(outname="host.name" name="hostname" format="jsonf")
}
input(type="imfile" file="$LOG" tag="app" addMetadata="on" freshStartTail="off")
action(type="omelasticsearch" server="127.0.0.1" serverport="$PORT" template="ecs"
       searchIndex="bench" bulkmode="on" maxbytes="8m" esVersion.major="8"
       queue.type="linkedList" queue.size="200000" queue.dequeueBatchSize="20000"
       action.resumeRetryCount="-1")
EOF
  local t0; t0=$(date +%s.%N)
  rsyslogd -n -f "$WORK/rsyslog.conf" -i "$WORK/rsyslog.pid" &
  SHIP_PID=$!
  RSYSLOG=$(measure "$t0" "$SHIP_PID")
  kill "$SHIP_PID"; wait "$SHIP_PID" 2>/dev/null || true; SHIP_PID=""
  kill "$RECV_PID"; wait "$RECV_PID" 2>/dev/null || true; RECV_PID=""
}

run_ours OURS
ROWS=("log-tail-ship" "$OURS")
if [ "${BUFFER:-0}" = 1 ]; then
  run_ours OURS_BUFFER --buffer-dir "$WORK/ours-buffer"
  ROWS+=("+ --buffer-dir" "$OURS_BUFFER")
fi
if [ "$FORMAT" != cri ]; then
  run_rsyslog
  ROWS+=("rsyslog" "$RSYSLOG")
fi

python3 - "$MIB" "$LINES" "${ROWS[@]}" <<'EOF'
import sys
mib, lines = float(sys.argv[1]), int(sys.argv[2])
rows = {}
args = sys.argv[3:]
for name, raw in zip(args[::2], args[1::2]):
    secs, cpu, rss, rcpu = map(float, raw.split())
    rows[name] = (mib / secs, lines / secs, cpu / mib, rss / 1024, rcpu / secs)
print(f"{'':14} {'MiB/s':>8} {'lines/s':>11} {'CPU s/MiB':>10} {'peak RSS MiB':>13} {'receiver CPU':>13}")
for name, (mbs, lps, cpm, rss, rc) in rows.items():
    print(f"{name:14} {mbs:8.1f} {lps:11.0f} {cpm:10.4f} {rss:13.1f} {rc:12.0%}")
o = rows["log-tail-ship"]
for peer in ("+ --buffer-dir", "rsyslog"):
    if peer in rows:
        r = rows[peer]
        print(f"{'ratio':14} {o[0]/r[0]:7.2f}x {o[1]/r[1]:10.2f}x {o[2]/r[2]:9.2f}x {o[3]/r[3]:12.2f}x  (log-tail-ship / {peer})")
EOF
