#!/usr/bin/env bash
# What each applet costs while nothing happens, next to the tool it replaces:
# every applet and peer starts in a typical idle configuration, settles, and
# then CPU time (utime+stime of the process tree, reaped children included,
# from /proc/PID/stat) is measured over a window, plus RSS (VmRSS summed over
# the tree) at its end. All run at once: idle processes do not compete.
#   static-serve          vs nginx (1 worker, access log off)
#   tcp-proxy             vs haproxy (mode tcp, one listener, no checks)
#   log-tail-ship         vs rsyslogd with imfile (inotify) to a file
#   git-sync (period 10s) vs a shell loop of `git fetch` every 10s
#   git-sync over https   the same, from git http-backend behind lighttpd (TLS, a
#                         self-signed CA added to the system's), with the CA store in
#                         Debian's and the image's layout (scripts/ca-dir: bundle and
#                         hashed directory), and with the bundle alone (no hashed
#                         directory, as an image that ships only the bundle)
#   config-watch-reload   no Debian peer (configmap-reload is not packaged)
# Usage: benches/idle.sh [path/to/sidecar]
#   IDLE_SECONDS (default 60) window, IDLE_SETTLE (default 5) settle time.
# Build first: cargo build --release   (default features: every applet)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

BIN=${1:-${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/sidecar}
[ -x "$BIN" ] || { echo "no binary at $BIN; build with cargo build --release first" >&2; exit 2; }
BIN=$(realpath "$BIN")
WINDOW=${IDLE_SECONDS:-60}
SETTLE=${IDLE_SETTLE:-5}
for tool in nginx haproxy rsyslogd lighttpd openssl git python3; do
  command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install nginx-light haproxy rsyslog lighttpd openssl git python3)" >&2; exit 2; }
done

scratch_dir
tmp=$work

start() { # NAME CMD...: runs CMD in the background, remembers its pid as NAME
  local name=$1; shift
  "$@" >"$tmp/$name.out" 2>&1 &
  pids+=("$!")
  eval "pid_${name//-/_}=$!"
}

# --- fixtures ---------------------------------------------------------------
mkdir -p "$tmp/www" "$tmp/logs" "$tmp/cw" "$tmp/gs" "$tmp/nginx" "$tmp/rsyslog"
echo '<h1>hello</h1>' >"$tmp/www/index.html"
echo 'start' >"$tmp/logs/app.log"
echo 'key: value' >"$tmp/cw/app.yaml"
git init -q --bare "$tmp/up.git"
git clone -q "$tmp/up.git" "$tmp/seed" 2>/dev/null
git -C "$tmp/seed" -c user.name=b -c user.email=b@b commit -q --allow-empty -m one
git -C "$tmp/seed" push -q origin HEAD:refs/heads/main
git -C "$tmp/up.git" symbolic-ref HEAD refs/heads/main

ss_port=$(free_port); ng_port=$(free_port); tp_port=$(free_port); hp_port=$(free_port)
up_port=$(free_port); rl_port=$(free_port)

cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off; worker_processes 1; pid $tmp/nginx/pid; error_log $tmp/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/b; proxy_temp_path $tmp/nginx/p; fastcgi_temp_path $tmp/nginx/f;
  uwsgi_temp_path $tmp/nginx/u; scgi_temp_path $tmp/nginx/s;
  server { listen 127.0.0.1:$ng_port; root $tmp/www; }
}
EOF
cat >"$tmp/haproxy.cfg" <<EOF
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen p
  bind 127.0.0.1:$hp_port
  server up 127.0.0.1:$up_port
EOF
cat >"$tmp/rsyslog/rsyslog.conf" <<EOF
global(workDirectory="$tmp/rsyslog")
module(load="imfile")
input(type="imfile" file="$tmp/logs/*.log" tag="app")
action(type="omfile" file="$tmp/rsyslog/out.log")
EOF

# The CA stores that trust the https git server (started below).
mkdir -p "$tmp/gs-https" "$tmp/gs-https-bundle" "$tmp/ca-bundle-only"

# --- start everything -------------------------------------------------------
admin=(--admin-addr=127.0.0.1:0)
start static-serve "$BIN" static-serve --root "$tmp/www" --listen "127.0.0.1:$ss_port" "${admin[@]}"
start nginx nginx -c "$tmp/nginx/nginx.conf"
start tcp-proxy "$BIN" tcp-proxy --listen "127.0.0.1:$tp_port" --upstream "127.0.0.1:$up_port" "${admin[@]}"
start haproxy haproxy -db -f "$tmp/haproxy.cfg"
start log-tail-ship "$BIN" log-tail-ship --path "$tmp/logs/*.log" --data-dir "$tmp/lts" \
  --sink=http --http-url "http://127.0.0.1:$rl_port/" "${admin[@]}"
start rsyslog rsyslogd -n -f "$tmp/rsyslog/rsyslog.conf" -i "$tmp/rsyslog/pid"
start git-sync "$BIN" git-sync --repo "file://$tmp/up.git" --root "$tmp/gs" --period=10s "${admin[@]}"
git_https_server "$tmp/gh" "$tmp"
scripts/ca-dir "$tmp/ca" "$https_cert"
cp "$tmp/ca/ca-certificates.crt" "$tmp/ca-bundle-only/"
https_repo=(--repo "https://127.0.0.1:$https_port/git/up.git" --period=10s "${admin[@]}")
start git-sync-https env SSL_CERT_FILE="$tmp/ca/ca-certificates.crt" SSL_CERT_DIR="$tmp/ca" \
  "$BIN" git-sync --root "$tmp/gs-https" "${https_repo[@]}"
start git-sync-https-bundle env SSL_CERT_FILE="$tmp/ca-bundle-only/ca-certificates.crt" SSL_CERT_DIR="$tmp/ca-bundle-only" \
  "$BIN" git-sync --root "$tmp/gs-https-bundle" "${https_repo[@]}"
git clone -q "$tmp/up.git" "$tmp/fetch-loop"
start git-fetch-loop sh -c "while sleep 10; do git -C '$tmp/fetch-loop' fetch -q; done"
start config-watch-reload "$BIN" config-watch-reload --watch "$tmp/cw" \
  --reload-url "http://127.0.0.1:$rl_port/-/reload" "${admin[@]}"

wait_port "$ss_port"; wait_port "$ng_port"; wait_port "$tp_port"; wait_port "$hp_port"
wait_file() { # a file every peer must produce once it works, so idle is not broken
  for _ in $(seq 1 1500); do [ -e "$1" ] && return 0; sleep 0.02; done
  echo "no $1" >&2; for f in "$tmp"/*.out; do echo "== $f"; tail -n 5 "$f"; done >&2; exit 1
}
wait_file "$tmp/gs/up.git"           # git-sync's first sync published the worktree
wait_file "$tmp/gs-https/up.git"
wait_file "$tmp/gs-https-bundle/up.git"
wait_file "$tmp/rsyslog/out.log"  # rsyslog read the existing line
sleep "$SETTLE"
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "a process died during start-up:" >&2; tail -n 5 "$tmp"/*.out >&2; exit 1; }
done

# --- measure ----------------------------------------------------------------
names=(static-serve nginx tcp-proxy haproxy log-tail-ship rsyslog git-sync git-sync-https git-sync-https-bundle
  git-fetch-loop config-watch-reload)
declare -A t0 t1 rss
for n in "${names[@]}"; do v=pid_${n//-/_}; t0[$n]=$(ticks "${!v}"); done
echo "measuring ${WINDOW}s of idle..." >&2
sleep "$WINDOW"
for n in "${names[@]}"; do
  v=pid_${n//-/_}; t1[$n]=$(ticks "${!v}"); rss[$n]=$(rss_kib "${!v}")
done

# --- report -----------------------------------------------------------------
cpu_ms() { ticks_ms $((t1[$1] - t0[$1])); }
# The goal (issue 14): every applet idles at <= 8 MiB RSS; the stripped binary is <= 15 MiB.
GOAL_RSS_KIB=$((8 * 1024))
GOAL_BIN_MIB=15
goal() { [ "${rss[$1]}" -le "$GOAL_RSS_KIB" ] && echo ok || echo OVER; }
# A row: applet, its CPU, RSS and goal; the peer, its CPU and RSS; the ratios.
row_format='%-22s %10s %9s %5s   %-15s %10s %9s   %9s %9s\n'
printf "$row_format" applet "cpu ms" "rss MiB" "<=8" peer "cpu ms" "rss MiB" "cpu x" "rss x"
row() { # APPLET PEER
  local a=$1 p=$2 ac am pc pm
  ac=$(cpu_ms "$a"); am=$(awk -v k="${rss[$a]}" 'BEGIN{printf "%.1f", k/1024}')
  if [ -z "$p" ]; then
    printf "$row_format" "$a" "$ac" "$am" "$(goal "$a")" "(none)" - - - -
    return
  fi
  pc=$(cpu_ms "$p"); pm=$(awk -v k="${rss[$p]}" 'BEGIN{printf "%.1f", k/1024}')
  printf "$row_format" "$a" "$ac" "$am" "$(goal "$a")" "$p" "$pc" "$pm" \
    "$(ratio "$ac" "$pc")" "$(ratio "${rss[$a]}" "${rss[$p]}")"
}
row static-serve nginx
row tcp-proxy haproxy
row log-tail-ship rsyslog
row git-sync git-fetch-loop
row git-sync-https git-fetch-loop
row git-sync-https-bundle git-fetch-loop
row config-watch-reload ""
strip -o "$tmp/sidecar.stripped" "$BIN"
bin_mib=$(awk -v b="$(stat -c %s "$tmp/sidecar.stripped")" 'BEGIN{printf "%.1f", b/1048576}')
echo "binary (stripped): $bin_mib MiB (goal <= $GOAL_BIN_MIB MiB: $(awk -v m="$bin_mib" -v g="$GOAL_BIN_MIB" 'BEGIN{print (m <= g ? "ok" : "OVER")}'))"
echo "cpu ms: CPU time used in ${WINDOW}s idle, in clock ticks of $((1000 / HZ)) ms (0 = under one tick); rss: summed over the process tree at the end (the fetch loop: its shell between fetches); x: ours / peer"
# Most of an idle applet's RSS is code; build.rs groups what the applets run
# (link/symbol-order.txt). Names that changed since the file was made lose
# their place: regenerate with scripts/symbol-order when this share falls.
if [ -s link/symbol-order.txt ]; then
  listed=$(sed '/^$/d' link/symbol-order.txt | sort -u | wc -l)
  found=$(nm --defined-only "$BIN" 2>/dev/null | awk '{print $3}' | sort -u | comm -12 - <(sed '/^$/d' link/symbol-order.txt | sort -u) | wc -l)
  echo "symbol order: $found of $listed listed functions are in the binary (regenerate with scripts/symbol-order when this falls)"
fi
