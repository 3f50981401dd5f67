#!/usr/bin/env bash
# static-serve vs nginx per request, in counts that do not depend on the
# machine's load: user-space instructions (valgrind's callgrind) and system
# calls (strace -c), one worker each, wrk -t1 -c4, for a 1 KiB file, a 100 KiB
# file and a 404 (Debian packages valgrind, strace, wrk, nginx).
#
#   BIN=path/to/sidecar benches/static-serve-count.sh
#
# Kernel work is not in the instruction counts (no hardware counters on the
# build machine); the system call counts stand in for it. nginx as in
# benches/static-serve.sh: access_log off, log_not_found off, sendfile on,
# tcp_nopush on. Under valgrind (which lacks openat2) static-serve walks paths
# component by component, the fallback for kernels before 5.6: the file cases
# do not open at all on a cache hit, the 404 is then an openat per component.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
need valgrind callgrind_control strace wrk nginx "apt-get install valgrind strace wrk nginx"
sidecar_bin static-serve

scratch_dir
# nginx's workers run as nobody: the directory must be readable.
chmod 755 "$work"
mkdir -p "$work/site"
head -c 1024 /dev/urandom > "$work/site/1k.bin"
head -c $((100 * 1024)) /dev/urandom > "$work/site/100k.bin"
# Our caches take files (and directories) whose ctime is over a second old.
sleep 1.2
PORT=$(free_port)
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  log_not_found off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $work/t1;
  proxy_temp_path $work/t2;
  fastcgi_temp_path $work/t3;
  uwsgi_temp_path $work/t4;
  scgi_temp_path $work/t5;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$PORT; root $work/site; }
}
EOF
# One worker (nginx ignores the variable; under valgrind, env would be traced instead).
export TOKIO_WORKER_THREADS=1
ours=("$BIN" static-serve --root "$work/site" --listen "127.0.0.1:$PORT" --admin-addr off
  --log-level warn)
theirs=(nginx -c "$work/nginx.conf" -e "$work/nginx-error.log")
CASES=(1k.bin 100k.bin missing)

# Runs "$@" under callgrind; prints "instructions-per-request" for each case.
instructions() {
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" "$@" 2>"$work/valgrind.log" &
  local vg=$! _
  pids+=("$vg")
  # valgrind starts slowly: up to 60 s.
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
  done
  for c in "${CASES[@]}"; do
    wrk -t1 -c4 -d2s "http://127.0.0.1:$PORT/$c" >/dev/null
    callgrind_control -z "$vg" >/dev/null
    local out reqs ir
    out=$(wrk -t1 -c4 -d4s "http://127.0.0.1:$PORT/$c")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    callgrind_control -d "$vg" >/dev/null
    ir=$(awk '/^summary:|^totals:/ {print $2; exit}' "$(ls -t "$work"/cg.*.* | head -1)")
    rm -f "$work"/cg.*.*
    echo -n "$((ir / reqs)) "
  done
  kill "$vg"
  wait "$vg" 2>/dev/null || true
}

# Runs "$@" natively; prints "syscalls-per-request" for each case.
syscalls() {
  "$@" &
  local p=$!
  pids+=("$p")
  wait_port "$PORT"
  for c in "${CASES[@]}"; do
    wrk -t1 -c4 -d1s "http://127.0.0.1:$PORT/$c" >/dev/null
    strace -f -c -o "$work/strace" -p "$p" 2>/dev/null &
    local st=$! out reqs
    sleep 0.5
    out=$(wrk -t1 -c4 -d3s "http://127.0.0.1:$PORT/$c")
    kill -INT "$st"
    wait "$st" 2>/dev/null || true
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v r="$reqs" '$NF == "total" {printf "%.2f ", $4 / r}' "$work/strace"
  done
  kill "$p"
  wait "$p" 2>/dev/null || true
}

read -r -a n_ir <<<"$(instructions "${theirs[@]}")"
read -r -a o_ir <<<"$(instructions "${ours[@]}")"
read -r -a n_sc <<<"$(syscalls "${theirs[@]}")"
read -r -a o_sc <<<"$(syscalls "${ours[@]}")"
printf '%-9s %14s %14s %8s %12s %12s %8s\n' case "nginx instr" "ours instr" ratio \
  "nginx sysc" "ours sysc" ratio
for i in "${!CASES[@]}"; do
  printf '%-9s %14s %14s %7sx %12s %12s %7sx\n' "${CASES[$i]}" "${n_ir[$i]}" "${o_ir[$i]}" \
    "$(ratio "${o_ir[$i]}" "${n_ir[$i]}")" "${n_sc[$i]}" "${o_sc[$i]}" \
    "$(ratio "${o_sc[$i]}" "${n_sc[$i]}")"
done
echo "per request; one worker each, wrk -t1 -c4; $(nginx -v 2>&1)"
