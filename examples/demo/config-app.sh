#!/usr/bin/env bash
# The app of `demo.sh config`: prints the config it loaded, at start and again
# whenever it gets SIGHUP (what config-watch-reload sends after a change).
#   config-app.sh CONFIG_FILE PID_FILE
set -euo pipefail
load() { echo "app: loaded config: $(cat "$1")"; }
trap 'load "$1"' HUP
echo $$ >"$2"
load "$1"
# Idle on a read from a private FIFO: the HUP trap runs at once, and there is
# no child (a `sleep`) to outlive the app when it is stopped.
fifo=$(mktemp -u)
mkfifo "$fifo"
exec 3<>"$fifo"
rm "$fifo"
while :; do
  read -r -t 3600 <&3 || true
done
