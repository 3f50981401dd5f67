#!/usr/bin/env bash
# Every seed scenario on a laptop, without Kubernetes: one command each.
#
#   examples/demo.sh static   git-sync publishes a site into a shared volume, static-serve serves it
#   examples/demo.sh config   config-watch-reload makes an app reload after a kubelet-style ..data swap
#   examples/demo.sh logs     log-tail-ship ships an app's logs (across a rotation) to a local receiver
#                             speaking the Elasticsearch _bulk API; --es-url URL ships to a real one
#   examples/demo.sh mesh     two tcp-proxy sidecars with mutual TLS (examples/mesh-demo.sh)
#
# Options: --smoke runs non-interactively, checks the effect and exits 0 (the
# tests run every smoke mode); --port PORT (static). SIDECAR_BIN=PATH uses a
# built binary instead of building one. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
here=examples/demo

usage() {
  sed -n '2,13s/^# \{0,1\}//p' "$0" >&2
  exit 2
}
[ $# -ge 1 ] || usage
scenario=$1
shift
case "$scenario" in static | config | logs | mesh) ;; *) usage ;; esac
smoke=false port=8080 es_url=
# mesh-demo.sh takes its own options.
while [ "$scenario" != mesh ] && [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=true; shift ;;
    --port) port=$2; shift 2 ;;
    --es-url) es_url=$2; shift 2 ;;
    *) usage ;;
  esac
done

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold= plain=; fi
say() { printf '%sdemo:%s %s\n' "$bold" "$plain" "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

# What the scenario and the build need, as Debian packages. Missing ones are
# installed when we are root, or named with the exact command otherwise, before
# anything is built.
need=()
want() { command -v "$1" >/dev/null || need+=("$2"); }
case "$scenario" in
  static) want git git ;;
  logs) [ -n "$es_url" ] || want python3 python3 ;;
  mesh) want openssl openssl; want curl curl ;;
esac
if [ -z "${SIDECAR_BIN:-}" ]; then
  command -v cargo >/dev/null || die "needs the Rust toolchain: https://rustup.rs"
  want cc gcc
  # gcc alone links nothing: the C library's headers and start files.
  [ -e /usr/include/stdio.h ] || need+=(libc6-dev)
  want pkg-config pkg-config
  if command -v pkg-config >/dev/null; then
    pkg-config --exists zlib || need+=(zlib1g-dev)
  else
    need+=(zlib1g-dev)
  fi
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  else
    die "needs ${need[*]}; run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${need[*]}"
  fi
fi

if [ "$scenario" = mesh ]; then
  [ -x examples/mesh-demo.sh ] || die "examples/mesh-demo.sh is missing"
  exec examples/mesh-demo.sh "$@"
fi

if [ -n "${SIDECAR_BIN:-}" ]; then
  bin=$SIDECAR_BIN
else
  say "building sidecar (release; the first build takes a few minutes)"
  cargo build --release
  bin=target/x86_64-unknown-linux-gnu/release/sidecar
fi

work=$(mktemp -d -t sidecar-demo-XXXXXX)
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
  echo "demo: timed out waiting for /$pattern/ in $file:" >&2
  cat "$file" >&2 || true
  return 1
}

# Starts `sidecar APPLET ARGS…` in the background, its log in $work/APPLET.log,
# and prints where its admin server (/metrics, /readyz) listens.
start_applet() {
  local applet=$1
  shift
  "$bin" "$applet" --admin-addr 127.0.0.1:0 "$@" 2>"$work/$applet.log" &
  local line
  line=$(wait_line "$work/$applet.log" "admin server listening")
  admin[$applet]=$(sed -E 's/.*addr=([0-9.:]+).*/\1/' <<<"$line")
  say "$applet runs: metrics at http://${admin[$applet]}/metrics, log in $work/$applet.log"
}
declare -A admin

# Shows what an app prints as it prints it. (Pipelines in the background
# would outlive the demo: only the last process of one is a job.)
show() {
  tail -n +1 -F "$1" 2>/dev/null &
}

# GET ADDR PATH over bash's /dev/tcp: no curl needed.
http_get() {
  exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
  cat <&3
  exec 3<&-
}

# Waits (at most 60 s) until GET ADDR PATH answers with a body matching PATTERN.
wait_http() {
  local i
  for i in $(seq 600); do
    if http_get "$1" "$2" 2>/dev/null | grep -q -E -- "$3"; then return 0; fi
    sleep 0.1
  done
  die "timed out waiting for /$3/ at http://$1$2"
}

static_demo() {
  local site=$work/site.git
  git init -q -b main "$site"
  page() {
    printf '<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=2>\n<title>sidecar demo</title>\n<h1>Revision %s</h1>\n<p>Committed at %s UTC; git-sync published it, static-serve serves it.</p>\n' \
      "$1" "$(date -u +%H:%M:%S)" >"$site/index.html"
    git -C "$site" add index.html
    git -C "$site" -c user.name=demo -c user.email=demo@example.com commit -q -m "revision $1"
  }
  page 1
  mkdir -p "$work/volume"
  start_applet git-sync --repo "file://$site" --ref main --root "$work/volume" --link site --period 1s
  $smoke && port=0
  start_applet static-serve --root "$work/volume/site" --listen "127.0.0.1:$port"
  local addr
  addr=$(wait_line "$work/static-serve.log" "static-serve listening" | sed -E 's/.*addr=([0-9.:]+).*/\1/')
  wait_http "$addr" / "Revision 1"
  say "open http://$addr/ : the page follows the repository $site"
  if $smoke; then
    page 2
    wait_http "$addr" / "Revision 2"
    say "smoke: revision 2 committed, published and served"
    return
  fi
  say "a new commit every 3 s; Ctrl-C stops"
  local i
  for i in $(seq 2 1000); do
    sleep 3
    page "$i"
    say "committed revision $i"
  done
}

config_demo() {
  # A ConfigMap volume as the kubelet writes it: the files live in a timestamped
  # directory, `..data` points at it, and each file name points through `..data`.
  local vol=$work/config n=0
  mkdir -p "$vol"
  publish() {
    n=$((n + 1))
    mkdir "$vol/..v$n"
    printf 'greeting=%s\n' "$1" >"$vol/..v$n/app.conf"
    ln -s "..v$n" "$vol/..data_tmp"
    mv -T "$vol/..data_tmp" "$vol/..data" # the atomic swap
    [ -e "$vol/app.conf" ] || ln -s ..data/app.conf "$vol/app.conf"
    [ $n -eq 1 ] || rm -rf "$vol/..v$((n - 1))"
  }
  publish hello
  # The app: prints the config it loaded, at start and on every SIGHUP.
  "$here/config-app.sh" "$vol/app.conf" "$work/app.pid" >"$work/app.out" &
  show "$work/app.out"
  wait_line "$work/app.out" "greeting=hello" >/dev/null
  start_applet config-watch-reload --watch "$vol" --signal HUP --pid-file "$work/app.pid"
  wait_line "$work/config-watch-reload.log" "watching" >/dev/null
  say "the app prints its config when it (re)loads; the volume is $vol"
  if $smoke; then
    publish bonjour
    wait_line "$work/app.out" "greeting=bonjour" >/dev/null
    say "smoke: the new value arrived after the ..data swap"
    return
  fi
  say "a new ConfigMap version every 5 s; Ctrl-C stops"
  local words=(bonjour hola ciao hallo ola) i=0
  while :; do
    sleep 5
    say "kubelet swaps ..data to greeting=${words[i % 5]}"
    publish "${words[i % 5]}"
    i=$((i + 1))
  done
}

logs_demo() {
  mkdir -p "$work/logs"
  local url=$es_url
  if [ -z "$url" ]; then
    python3 -u "$here/es-receiver.py" "$work/es.port" >"$work/es.out" &
    show "$work/es.out"
    local i
    for i in $(seq 600); do [ -e "$work/es.port" ] && break; sleep 0.1; done
    [ -e "$work/es.port" ] || die "the receiver did not start"
    url=http://127.0.0.1:$(cat "$work/es.port")
    say "a local Elasticsearch _bulk receiver listens on $url and prints what arrives"
  fi
  start_applet log-tail-ship --path "$work/logs/*.log" --data-dir "$work/ship" \
    --sink elasticsearch --es-url "$url" --es-index demo-logs
  say "the app writes $work/logs/app.log and rotates it (mv to app.log.1, new app.log)"
  # The app's log, rotated as logrotate's default `create` mode does.
  log() { printf '%s app: %s\n' "$(date -u +%H:%M:%S)" "$1" >>"$work/logs/app.log"; }
  rotate() { mv "$work/logs/app.log" "$work/logs/app.log.1" && : >"$work/logs/app.log"; }
  if $smoke; then
    [ -z "$es_url" ] || die "--smoke checks the local receiver; drop --es-url"
    log "before rotation 1"
    log "before rotation 2"
    wait_line "$work/es.out" "before rotation 2" >/dev/null
    rotate
    log "after rotation 1"
    wait_line "$work/es.out" "after rotation 1" >/dev/null
    say "smoke: lines from before and after the rotation arrived"
    return
  fi
  say "a line a second, a rotation every 10 lines; Ctrl-C stops"
  local n=0
  while :; do
    n=$((n + 1))
    log "request $n served"
    [ $((n % 10)) -ne 0 ] || { rotate; say "rotated app.log"; }
    sleep 1
  done
}

"${scenario}_demo"
