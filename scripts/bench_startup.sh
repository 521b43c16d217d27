#!/usr/bin/env bash
# Start-up cost of the tool (issue 12's targets: inv --list <= 0.25 s, a no-op haproxy.setup <= 0.35 s),
# timed by farm-bench when it is on PATH (median of 10), else by a plain loop. Needs the lab up.
set -euo pipefail
cd "$(dirname "$0")/.."
INV=.venv/bin/inv
if command -v farm-bench >/dev/null; then
  farm-bench -n 10 -- "$INV" --list | grep -E "wall|^#" || true
  farm-bench -n 10 -- "$INV" haproxy.setup | grep -E "wall|^#" || true
else
  for cmd in "--list" "haproxy.setup"; do
    start=$(date +%s.%N); for _ in $(seq 10); do $INV $cmd >/dev/null; done; end=$(date +%s.%N)
    echo "inv $cmd: $(echo "($end - $start) / 10" | bc -l | cut -c1-5) s mean of 10"
  done
fi
