#!/usr/bin/env bash
# Start-up cost of the tool (issue 23's targets: `inv --list` <= 0.2 s, a no-op `haproxy.setup` on the
# balancer pair <= 0.35 s), wall time, median of 5, with bytecode (compiled first; users have it) and
# without (PYTHONDONTWRITEBYTECODE, as some CI images run). Needs the lab up for haproxy.setup.
set -euo pipefail
cd "$(dirname "$0")/.."
INV=.venv/bin/inv
env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -m compileall -q fabfile tasks.py .venv/lib >/dev/null 2>&1 || true
median_of_5() {  # the command's wall seconds, median of 5 runs
  for _ in 1 2 3 4 5; do
    start=$(date +%s.%N); "$@" >/dev/null; end=$(date +%s.%N); echo "$end - $start" | bc -l
  done | sort -n | sed -n 3p | cut -c1-5
}
for bytecode in with without; do
  if [ "$bytecode" = with ]; then run=(env -u PYTHONDONTWRITEBYTECODE); else run=(env PYTHONDONTWRITEBYTECODE=1); fi
  echo "inv --list (${bytecode} bytecode): $(median_of_5 "${run[@]}" "$INV" --list) s median of 5 (target 0.2)"
  echo "inv haproxy.setup, no-op (${bytecode} bytecode): $(median_of_5 "${run[@]}" "$INV" haproxy.setup) s median of 5 (target 0.35)"
done
