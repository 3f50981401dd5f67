# Shared helpers for benches/*.sh; source it first: `. "$(dirname "$0")/lib.sh"`.
#
# One way of measuring, for every bench: CPU and RSS are those of the whole
# process tree under a PID (nginx's master and workers, git-sync's git
# children, a peer's forked helpers), read from /proc. CPU counts the tree's
# live members (utime+stime) plus what they reaped (cutime+cstime), so
# short-lived children are included; RSS sums VmRSS (now) or VmHWM (peak)
# over the live members.

# Every PID below and including $1.
tree_pids() {
  local all todo=("$1") p
  all=$(ps -e -o pid=,ppid=)
  while [ ${#todo[@]} -gt 0 ]; do
    p=${todo[0]}
    todo=("${todo[@]:1}")
    echo "$p"
    todo+=($(awk -v p="$p" '$2 == p {print $1}' <<<"$all"))
  done
}

# CPU clock ticks used so far by the tree under $1: user and system time
# (utime, stime, cutime, cstime).
ticks() { stat_ticks "$1" '$12 + $13 + $14 + $15'; }
# The kernel part of `ticks`: system time only (stime, cstime).
sys_ticks() { stat_ticks "$1" '$13 + $15'; }
# The sum of the AWK expression $2 over /proc/PID/stat of the tree under $1.
stat_ticks() {
  local t=0 p v
  for p in $(tree_pids "$1"); do
    # Fields after the command name, which may hold spaces: utime is the 12th.
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk "{print $2}")
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

# Clock ticks → milliseconds and seconds.
HZ=$(getconf CLK_TCK)
ticks_ms() { echo $(($1 * 1000 / HZ)); }
ticks_s() { awk -v t="$1" -v hz="$HZ" 'BEGIN { printf "%.4f", t / hz }'; }

# RSS (KiB) of the tree under $1, now.
rss_kib() { tree_status_sum "$1" VmRSS; }
# Peak RSS (KiB) of the tree under $1: each live member's high-water mark.
hwm_kib() { tree_status_sum "$1" VmHWM; }
tree_status_sum() {
  local r=0 p v
  for p in $(tree_pids "$1"); do
    v=$(awk -v k="$2:" '$1 == k {print $2}' "/proc/$p/status" 2>/dev/null)
    r=$((r + ${v:-0}))
  done
  echo "$r"
}

# The lower of two figures, "-" standing for none yet. Benches that repeat a
# measurement keep each side's lowest latency: noise on a shared machine only
# ever adds latency, as it only ever takes throughput away.
lowest() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "-" || b + 0 < a + 0) ? b : a }'; }

# A ratio a/b with two decimals; "inf" when b is 0 and a is not.
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print (a == 0 ? "1.00" : "inf"); else printf "%.2f\n", a / b }'
}

# A loopback port nothing listens on.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (at most 10 s) until something accepts on 127.0.0.1:$1.
wait_port() {
  local _
  for _ in $(seq 1 500); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.02
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

# Exits with the install command when a tool is missing: need TOOL… "apt-get install …"
need() {
  local hint=${*: -1} tool
  for tool in "${@:1:$#-1}"; do
    command -v "$tool" >/dev/null || { echo "missing $tool ($hint)" >&2; exit 2; }
  done
}

# A scratch directory for one run ($work, under PARENT or $TMPDIR) and the
# processes the run starts ($pids): however the script ends, they are killed
# and the directory removed.
scratch_dir() {
  work=$(mktemp -d "${1:-${TMPDIR:-/tmp}}/sidecar-bench.XXXXXX")
  pids=()
  trap scratch_cleanup EXIT
}
scratch_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# The sidecar to measure: $BIN when set, otherwise a release build of just
# the applet FEATURE, made now (its progress on stderr).
sidecar_bin() { # FEATURE
  if [[ -z "${BIN:-}" ]]; then
    cargo build --release --no-default-features --features "$1" >&2
    BIN=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/sidecar
  fi
}

# A git server over HTTPS on loopback: git http-backend behind lighttpd (TLS,
# a fresh self-signed certificate for 127.0.0.1), serving the repositories
# under BASE at https://127.0.0.1:$https_port/git/<name>; the certificate to
# trust is $https_cert. Its files go in DIR; lighttpd joins $pids.
git_https_server() { # DIR BASE
  local dir=$1 base=$2
  need lighttpd openssl "apt-get install lighttpd openssl"
  mkdir -p "$dir"
  https_port=$(free_port)
  https_cert=$dir/cert.pem
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$dir/key.pem" -out "$https_cert" 2>/dev/null
  cat >"$dir/lighttpd.conf" <<CONF
server.document-root = "$dir"
server.bind = "127.0.0.1"
server.port = $https_port
server.modules = ( "mod_alias", "mod_cgi", "mod_setenv", "mod_openssl" )
server.errorlog = "$dir/error.log"
ssl.engine = "enable"
ssl.pemfile = "$https_cert"
ssl.privkey = "$dir/key.pem"
alias.url = ( "/git/" => "$(git --exec-path)/git-http-backend/" )
\$HTTP["url"] =~ "^/git/" {
  cgi.assign = ( "" => "" )
  setenv.add-environment = ( "GIT_PROJECT_ROOT" => "$base", "GIT_HTTP_EXPORT_ALL" => "1" )
}
CONF
  lighttpd -D -f "$dir/lighttpd.conf" >"$dir/lighttpd.out" 2>&1 &
  pids+=($!)
  wait_port "$https_port"
}
