#!/usr/bin/env bash
# config-watch-reload vs the reloader a user would otherwise build: the
# configmap-reload recipe (fire on every `..data` create/move event, no
# debounce, no hashing) done with inotifywait + curl.
#
# configmap-reload itself is a Go program that is not packaged for Debian,
# and this workplace has neither a Go toolchain nor access to its releases, so
# it is not run here; the inotifywait recipe reacts to the same event with
# the same (lack of) filtering, so its latency is a lower bound for it.
#
# Measures, for each tool, in one run:
#   - latency from a kubelet-style ..data swap (AtomicWriter's 12 steps) to
#     the reload request arriving at an HTTP server: p50, p99, max over
#     $SWAPS swaps (default 100), our default --debounce (200ms);
#   - reloads caused by $IDENTICAL swaps to identical content (should be 0);
#   - idle CPU over $IDLE_SECONDS (default 60) and RSS.
#
# Needs: python3, inotify-tools, curl (apt-get install inotify-tools curl).
# Usage: benches/config-watch-reload.sh            (builds the release binary)
#        BIN=path/to/sidecar benches/config-watch-reload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

SWAPS=${SWAPS:-100}
IDENTICAL=${IDENTICAL:-10}
IDLE_SECONDS=${IDLE_SECONDS:-60}

sidecar_bin config-watch-reload
need python3 inotifywait curl "apt-get install inotify-tools curl python3"

work=$(mktemp -d -t cwr-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT

export BIN SWAPS IDENTICAL IDLE_SECONDS WORK="$work"
exec python3 - <<'PY'
import http.server, os, queue, signal, statistics, subprocess, threading, time

BIN, WORK = os.environ["BIN"], os.environ["WORK"]
SWAPS, IDENTICAL, IDLE = int(os.environ["SWAPS"]), int(os.environ["IDENTICAL"]), int(os.environ["IDLE_SECONDS"])
TICK = os.sysconf("SC_CLK_TCK")

arrivals = queue.Queue()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        arrivals.put(time.perf_counter())
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
URL = f"http://127.0.0.1:{server.server_address[1]}/-/reload"

class Volume:
    """The kubelet's AtomicWriter sequence on a plain directory."""
    def __init__(self, path):
        self.path, self.n = path, 0
        os.makedirs(path)
    def write(self, content):
        self.n += 1
        data = os.path.join(self.path, "..data")
        old = os.readlink(data) if os.path.islink(data) else None
        ts = f"..2026_01_01_00_00_00.{self.n:06d}"
        os.mkdir(os.path.join(self.path, ts))
        with open(os.path.join(self.path, ts, "app.yaml"), "w") as f:
            f.write(content)
        tmp = os.path.join(self.path, "..data_tmp")
        os.symlink(ts, tmp)
        os.rename(tmp, data)
        link = os.path.join(self.path, "app.yaml")
        if not os.path.lexists(link):
            os.symlink("..data/app.yaml", link)
        if old:
            subprocess.run(["rm", "-rf", os.path.join(self.path, old)], check=True)

def lib(fn, pid):
    """benches/lib.sh's measurement of the process tree under pid."""
    out = subprocess.run(["bash", "-c", f'. benches/lib.sh && {fn} "$0"', str(pid)],
                         check=True, capture_output=True, text=True)
    return int(out.stdout)

def wait_request(timeout=10.0):
    return arrivals.get(timeout=timeout)

def drain():
    n = 0
    while True:
        try:
            arrivals.get_nowait()
            n += 1
        except queue.Empty:
            return n

def bench(name, argv_for):
    vol = Volume(os.path.join(WORK, name))
    vol.write("v: 0\n")
    proc = subprocess.Popen(argv_for(vol.path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        # Ready when a swap gets through (no tool-specific readiness probe).
        deadline = time.monotonic() + 30
        i = 0
        while True:
            i += 1
            vol.write(f"warmup: {i}\n")
            try:
                wait_request(1.0)
                break
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name}: no reload within 30s")
        time.sleep(1.0)
        drain()
        lat = []
        extra = 0
        for n in range(SWAPS):
            t0 = time.perf_counter()
            vol.write(f"v: {n + 1}\n")
            lat.append((wait_request() - t0) * 1000)
            # A second request for the same swap shows up within the next one.
            extra += drain()
        time.sleep(1.0)
        extra += drain()
        for _ in range(IDENTICAL):
            vol.write(f"v: {SWAPS}\n")
            time.sleep(0.05)
        time.sleep(2.0)
        spurious = drain()
        c0 = lib("ticks", proc.pid)
        time.sleep(IDLE)
        idle_cpu = (lib("ticks", proc.pid) - c0) / TICK / IDLE * 100
        rss = lib("rss_kib", proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return dict(p50=statistics.median(lat), p99=q[98], max=lat[-1], extra=extra,
                spurious=spurious, cpu=idle_cpu, rss=rss)

def ours_with(debounce):
    return lambda d: [BIN, "config-watch-reload", "--watch", d, "--reload-url", URL, "--debounce", debounce,
                      "--admin-addr", "off", "--log-level", "warn"]

peer_script = (
    'inotifywait -m -q -e create,moved_to --format %f "$0" | '
    'while read -r f; do [ "$f" = ..data ] && curl -s -o /dev/null -X POST "$1"; done'
)
results = [
    ("sidecar", bench("sidecar", ours_with("200ms"))),
    ("sidecar(0ms)", bench("sidecar-nodebounce", ours_with("0"))),
    ("inotifywait", bench("inotifywait", lambda d: ["bash", "-c", peer_script, d, URL])),
]
peer = results[-1][1]

def ratio(a, b):
    return f"{a / b:.2f}x" if b else "-"

print(f"config-watch-reload vs inotifywait+curl (configmap-reload recipe); {SWAPS} kubelet swaps, "
      f"{IDENTICAL} identical swaps, {IDLE}s idle")
print(f"{'metric':<32}" + "".join(f"{n:>14}" for n, _ in results) + f"{'sidecar/peer':>14}")
rows = [
    ("swap->request p50 (ms)", "p50", "{:.1f}"),
    ("swap->request p99 (ms)", "p99", "{:.1f}"),
    ("swap->request max (ms)", "max", "{:.1f}"),
    ("extra requests over the swaps", "extra", "{}"),
    ("reloads for identical swaps", "spurious", "{}"),
    ("idle CPU (% of one core)", "cpu", "{:.3f}"),
    ("RSS (KiB)", "rss", "{}"),
]
ours = results[0][1]
for label, key, fmt in rows:
    print(f"{label:<32}" + "".join(f"{fmt.format(r[key]):>14}" for _, r in results) + f"{ratio(ours[key], peer[key]):>14}")
print("sidecar: default --debounce 200ms (quiet time that coalesces bursts) included in its latency;"
      " sidecar(0ms): --debounce 0; the recipe has no debounce")
PY
