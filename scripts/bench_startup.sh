#!/usr/bin/env bash
# Start-up cost of the tool (issue 23's targets: `inv --list` <= 0.2 s, a no-op `haproxy.setup` on the
# balancer pair <= 0.35 s), wall time, median of 5, with bytecode (compiled first; users have it) and
# without any (PYTHONDONTWRITEBYTECODE plus an empty PYTHONPYCACHEPREFIX, so every run compiles the
# project and its libraries again, as a workplace that never writes bytecode does). The pair as the
# inventory places it (haproxy-2 on a second Incus host: an Incus remote), then each balancer alone
# (--limit), which shows the local balancer's cost apart from the remote one's. Needs the lab up.
set -euo pipefail
cd "$(dirname "$0")/.."
INV=.venv/bin/inv
INVENTORY=${1:-hosts.yaml}
env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -m compileall -q fabfile tasks.py .venv/lib >/dev/null 2>&1 || true
empty_cache=$(mktemp -d)
trap 'rm -rf "$empty_cache"' EXIT
median_of_5() {  # the command's wall seconds, median of 5 runs (after one warm-up run)
  "$@" >/dev/null
  for _ in 1 2 3 4 5; do
    start=$(date +%s.%N); "$@" >/dev/null; end=$(date +%s.%N); echo "$end - $start" | bc -l
  done | sort -n | sed -n 3p | awk '{ printf "%.3f", $1 }'
}
balancers=$("$INV" inventory.show --inventory "$INVENTORY" --graph 2>/dev/null \
  | awk '/\|--@/ { inside = ($0 ~ /\|--@haproxy:$/) } inside && /\|  \|--[^@]/ { sub(/.*\|--/, ""); print }')
for bytecode in with without; do
  if [ "$bytecode" = with ]; then run=(env -u PYTHONDONTWRITEBYTECODE -u PYTHONPYCACHEPREFIX)
  else run=(env PYTHONDONTWRITEBYTECODE=1 PYTHONPYCACHEPREFIX="$empty_cache"); fi
  echo "inv --list (${bytecode} bytecode): $(median_of_5 "${run[@]}" "$INV" --list) s median of 5 (target 0.2)"
  echo "inv haproxy.setup, no-op, the pair (${bytecode} bytecode): $(median_of_5 "${run[@]}" "$INV" haproxy.setup --inventory "$INVENTORY") s median of 5 (target 0.35)"
  for balancer in $balancers; do
    echo "inv haproxy.setup --limit $balancer, no-op (${bytecode} bytecode): $(median_of_5 "${run[@]}" "$INV" haproxy.setup --inventory "$INVENTORY" --limit "$balancer") s median of 5"
  done
done
