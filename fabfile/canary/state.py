"""Where a running canary says what it does, for ``api.status`` / ``stream.status``: one small JSON file per
pool on the lock balancer. Commands as data (no I/O)."""

from __future__ import annotations

import json

from ..shell import Command, q

STATE_DIR = "/var/lib/veza-ops"


def state_path(pool: str) -> str:
    return f"{STATE_DIR}/canary-{pool}.json"


def write(state: dict) -> Command:
    """Replace the pool's canary state atomically (a status never reads half a file)."""
    path = state_path(state["pool"])
    return Command(f"mkdir -p {q(STATE_DIR)} && printf '%s\\n' {q(json.dumps(state, sort_keys=True))} > {q(path + '.tmp')} "
                   f"&& mv -f {q(path + '.tmp')} {q(path)}", timeout=10)


def read(pool: str) -> Command:
    return Command(f"cat {q(state_path(pool))} 2>/dev/null || true", timeout=10)


def parse(stdout: str) -> dict | None:
    try:
        state = json.loads(stdout)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def clear(pool: str) -> Command:
    return Command(f"rm -f {q(state_path(pool))}", timeout=10)
