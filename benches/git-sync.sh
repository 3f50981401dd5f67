#!/usr/bin/env bash
# git-sync benchmark: our in-process libgit2 sync vs the git CLI running
# upstream kubernetes/git-sync's per-pass command sequence, on the same
# repository served by `git daemon` (and file://), side by side in one run.
#
#   benches/git-sync.sh            # builds target/release/sidecar if needed
#   SIDECAR=/path/to/sidecar FILES=10000 POLLS=50 benches/git-sync.sh
#
# Prints: first sync of a FILES-file repo (wall time, CPU, peak RSS), CPU of
# a poll that finds nothing new, and latency of a sync that finds a new
# commit, each with the ratio CLI/ours (>1 means we are cheaper or faster).
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=${FILES:-10000}
POLLS=${POLLS:-50}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SIDECAR=${SIDECAR:-$TARGET_DIR/x86_64-unknown-linux-gnu/release/sidecar}
if [[ ! -x $SIDECAR ]]; then
  cargo build --release --no-default-features --features git-sync >&2
fi
command -v git >/dev/null || { echo "needs git" >&2; exit 1; }

# tmpfs by default: ext4 inode allocation after mass deletes (recently_deleted
# scans) otherwise dominates both sides and varies run to run.
WORK=$(mktemp -d "${BENCH_DIR:-/dev/shm}/git-sync-bench.XXXXXX")
DAEMON_PID=""
cleanup() {
  [[ -n $DAEMON_PID ]] && kill "$DAEMON_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
# No background auto-gc in the upstream repository while we measure.
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=gc.auto GIT_CONFIG_VALUE_0=0
# The CLI side gets upstream's default config (safe.directory is a v4 default).
g() { git -c gc.autoDetach=false -c gc.pruneExpire=now -c 'safe.directory=*' -c protocol.file.allow=always "$@"; }
export -f g

# --- the upstream repository: FILES files in 100 directories --------------
REPO=$WORK/repo
git init -q -b main "$REPO"
for ((d = 0; d < 100; d++)); do
  mkdir -p "$REPO/d$d"
  for ((f = 0; f < FILES / 100; f++)); do
    printf 'file %d/%d\n%s\n' "$d" "$f" "$RANDOM$RANDOM" > "$REPO/d$d/f$f.txt"
  done
done
git -C "$REPO" add -A && git -C "$REPO" commit -qm initial
git -C "$REPO" gc -q # a real server has packs
REPS=${REPS:-3}

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
git daemon --reuseaddr --export-all --listen=127.0.0.1 --port="$PORT" --base-path="$WORK" "$WORK" 2>/dev/null &
DAEMON_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

# --- upstream's per-pass sequence with the git CLI (SyncRepo in main.go) ----
# cli_pass ROOT URL: sanity checks, fetch, rev-parse; on a change: reset,
# worktree add, reset --hard, submodule update, atomic symlink swap, and
# the cleanup of the replaced worktree with gc.
cli_pass() {
  local root=$1 url=$2 link=$1/link
  if [[ ! -d $root/.git ]]; then
    mkdir -p "$root"
    g -C "$root" init -q -b git-sync
    g -C "$root" remote add origin "$url"
  fi
  g -C "$root" rev-parse --show-toplevel >/dev/null
  g -C "$root" fsck --no-progress --connectivity-only >/dev/null 2>&1
  local current=""
  [[ -L $link ]] && current=$(basename "$(readlink "$link")")
  g -C "$root" fetch "$url" main --verbose --no-progress --prune --no-auto-gc --depth 1 >/dev/null 2>&1
  local hash
  hash=$(g -C "$root" rev-parse 'FETCH_HEAD^{}')
  if [[ $hash == "$current" ]]; then
    # sanityCheckWorktree
    g -C "$root/.worktrees/$hash" rev-parse HEAD >/dev/null
    g -C "$root/.worktrees/$hash" fsck --no-progress --connectivity-only >/dev/null 2>&1
    return
  fi
  g -C "$root" reset --soft "$hash" >/dev/null
  g -C "$root" worktree add --force --detach "$root/.worktrees/$hash" "$hash" --no-checkout >/dev/null 2>&1
  echo "gitdir: ../../.git/worktrees/$hash" > "$root/.worktrees/$hash/.git"
  g -C "$root/.worktrees/$hash" reset --hard "$hash" -- >/dev/null
  g -C "$root/.worktrees/$hash" submodule update --init --recursive --depth 1 >/dev/null 2>&1
  ln -sfn ".worktrees/$hash" "$root/tmp-link" && mv -T "$root/tmp-link" "$link"
  # cleanup(): stale worktrees (timeout 0), then prune, reflog expiry and
  # gc (upstream's default --git-gc=always) because something was removed.
  if [[ -n $current && -d $root/.worktrees/$current ]]; then
    rm -rf "${root:?}/.worktrees/$current"
    g -C "$root" worktree prune --verbose >/dev/null 2>&1
    g -C "$root" reflog expire --expire-unreachable=all --all >/dev/null 2>&1
    g -C "$root" gc --quiet >/dev/null 2>&1
  fi
}
export -f cli_pass

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
noops() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^git_sync_count_total\{status="noop"\}/ { print $2; f=1 } END { if (!f) print 0 }'; }

# measure CMD...: prints "wall_s cpu_s maxrss_kb"
measure() {
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.out" "$@" >/dev/null 2>&1
  awk '{printf "%.3f %.3f %d\n", $1, $2 + $3, $4}' "$WORK/time.out"
}
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b) ? a : b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "n/a" }'; }

run_suite() { # URL LABEL
  local url=$1 label=$2
  local ours=$WORK/ours-$label cli=$WORK/cli-$label
  echo "== $label: $url ($FILES files)"

  # Best of REPS (the machine may be shared), alternating sides, fresh roots.
  local ow=999 oc=999 om=0 cw=999 cc=999 cm=0 w c m
  for ((r = 0; r < REPS; r++)); do
    rm -rf "$ours" "$cli"
    read -r w c m < <(measure "$SIDECAR" git-sync --admin-addr=off --log-level=warn --one-time --repo="$url" --root="$ours" --link=link)
    ow=$(min "$ow" "$w"); oc=$(min "$oc" "$c"); om=$(max "$om" "$m")
    read -r w c m < <(measure bash -c 'cli_pass "$0" "$1"' "$cli" "$url")
    cw=$(min "$cw" "$w"); cc=$(min "$cc" "$c"); cm=$(max "$cm" "$m")
  done
  printf '%-34s %10s %10s %8s\n' "" ours git-cli "cli/ours"
  printf '%-34s %9ss %9ss %8s\n' "first sync wall time" "$ow" "$cw" "$(ratio "$cw" "$ow")"
  printf '%-34s %9ss %9ss %8s\n' "first sync CPU time" "$oc" "$cc" "$(ratio "$cc" "$oc")"
  printf '%-34s %8sKB %8sKB %8s\n' "first sync peak RSS" "$om" "$cm" "$(ratio "$cm" "$om")"

  # No-change polls: our long-running process (CPU from /proc, polls from
  # its metrics) vs the same number of CLI passes.
  local aport; aport=$(free_port)
  "$SIDECAR" git-sync --admin-addr="127.0.0.1:$aport" --log-level=warn --period=20ms --repo="$url" --root="$ours" --link=link --touch-file=touched &
  local pid=$!
  for _ in $(seq 200); do [[ -e $ours/touched ]] && break; sleep 0.05; done
  local n0 t0 n1 t1 hz
  n0=$(noops "$aport"); t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  while (( $(noops "$aport") - n0 < POLLS )); do sleep 0.1; done
  n1=$(noops "$aport"); t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  hz=$(getconf CLK_TCK)
  local ours_poll cli_poll cpoll
  ours_poll=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n=$((n1 - n0)) 'BEGIN { printf "%.5f", (b - a) / hz / n }')
  read -r _ cpoll _ < <(measure bash -c 'for ((i = 0; i < '"$POLLS"'; i++)); do cli_pass "$0" "$1"; done' "$cli" "$url")
  cli_poll=$(awk -v c="$cpoll" -v n="$POLLS" 'BEGIN { printf "%.5f", c / n }')
  printf '%-34s %9ss %9ss %8s\n' "no-change poll CPU (per poll)" "$ours_poll" "$cli_poll" "$(ratio "$cli_poll" "$ours_poll")"

  # One new commit touching one file: a sync pass that finds it.
  local ow2=999 oc2=999 cw2=999 cc2=999
  for ((r = 0; r < REPS; r++)); do
    echo "change $RANDOM" >> "$REPO/d0/f0.txt"
    git -C "$REPO" commit -qam "change"
    read -r w c _ < <(measure "$SIDECAR" git-sync --admin-addr=off --log-level=warn --one-time --repo="$url" --root="$ours" --link=link)
    ow2=$(min "$ow2" "$w"); oc2=$(min "$oc2" "$c")
    read -r w c _ < <(measure bash -c 'cli_pass "$0" "$1"' "$cli" "$url")
    cw2=$(min "$cw2" "$w"); cc2=$(min "$cc2" "$c")
  done
  printf '%-34s %9ss %9ss %8s\n' "new-commit sync latency" "$ow2" "$cw2" "$(ratio "$cw2" "$ow2")"
  printf '%-34s %9ss %9ss %8s\n' "new-commit sync CPU" "$oc2" "$cc2" "$(ratio "$cc2" "$oc2")"
  [[ $(readlink "$ours/link") == $(readlink "$cli/link") ]] || { echo "MISMATCH: ours and the CLI published different commits" >&2; exit 1; }
}

run_suite "git://127.0.0.1:$PORT/repo" git-daemon
run_suite "file://$REPO" file
