#!/usr/bin/env bash
# The seed's Pod, locally: git-sync keeps a site in a shared "volume", static-serve
# serves it on http://127.0.0.1:8080, and a commit lands every few seconds so you
# can watch the page change. Ctrl-C stops everything.
#
#   ./examples/pod-demo.sh [--commits N] [--every SECONDS] [--port PORT]
set -euo pipefail
cd "$(dirname "$0")/.."

commits=60 every=3 port=8080
while [ $# -gt 0 ]; do
  case "$1" in
    --commits) commits=$2; shift 2 ;;
    --every) every=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) echo "usage: $0 [--commits N] [--every SECONDS] [--port PORT]" >&2; exit 2 ;;
  esac
done

for tool in git cargo; do
  command -v "$tool" >/dev/null || { echo "pod-demo: needs $tool (Debian: apt-get install git; Rust: rustup)" >&2; exit 2; }
done

# SIDECAR_BIN runs an already built binary instead of building one.
if [ -z "${SIDECAR_BIN:-}" ]; then
  cargo build --release --quiet
fi
bin=${SIDECAR_BIN:-target/x86_64-unknown-linux-gnu/release/sidecar}

work=$(mktemp -d -t sidecar-demo-XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

# The upstream repository a developer pushes to.
site=$work/site.git
git init -q -b main "$site"
page() {
  cat >"$site/index.html" <<HTML
<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=2>
<title>sidecar demo</title>
<h1>Hello from the sidecar Pod demo</h1>
<p>Revision $1, committed at $(date -u +%H:%M:%S) UTC.</p>
<p>git-sync published it into the shared volume; static-serve serves it.</p>
HTML
  git -C "$site" add index.html
  git -C "$site" -c user.name=demo -c user.email=demo@example.com commit -q -m "revision $1"
}
page 1

# The Pod: two containers sharing the volume $work/volume.
mkdir -p "$work/volume"
"$bin" git-sync --repo "file://$site" --ref main --root "$work/volume" --link site \
  --period 1s --admin-addr 127.0.0.1:0 &
pids+=($!)
"$bin" static-serve --root "$work/volume/site" --listen "127.0.0.1:$port" --admin-addr 127.0.0.1:0 &
pids+=($!)

echo
echo "  open http://127.0.0.1:$port/  (a new commit every ${every}s; Ctrl-C stops)"
echo
for i in $(seq 2 "$commits"); do
  sleep "$every"
  page "$i"
  echo "committed revision $i"
done
