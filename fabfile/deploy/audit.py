"""Audit trail lines and the commands that append and read them (pure).

One JSON object per line in ``/var/log/veza-ops/audit.jsonl`` on the balancer
(every event) and on the instance concerned (its own events). Appends are one
``printf >>`` of a line shorter than PIPE_BUF, so concurrent writers never
interleave inside a line.
"""

from __future__ import annotations

import json
import time

from ..shell import Command, q

AUDIT_DIR = "/var/log/veza-ops"
AUDIT_FILE = f"{AUDIT_DIR}/audit.jsonl"
COLUMNS = ("time", "who", "event", "task", "instance", "from", "to", "seconds", "outcome")


def record(event: str, *, who: str, run: str, task: str, instance: str | None = None, **fields) -> dict:
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, "who": who, "run": run,
             "task": task}
    if instance:
        entry["instance"] = instance
    entry.update({k: v for k, v in fields.items() if v is not None})
    return entry


def append(*entries: dict) -> Command:
    """Append ``entries`` in one round trip: one ``printf >>`` (one write) per line, in order."""
    lines = (json.dumps(entry, sort_keys=True, separators=(",", ":")) for entry in entries)
    writes = "; ".join(f"printf '%s\\n' {q(line)} >> {q(AUDIT_FILE)}" for line in lines)
    return Command(f"mkdir -p {q(AUDIT_DIR)} && {{ {writes}; }}", timeout=10)


def tail(last: int) -> Command:
    return Command(f"tail -n {int(last)} {q(AUDIT_FILE)} 2>/dev/null || true", timeout=15)


def parse(stdout: str) -> list:
    entries = []
    for line in stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _note(entry) -> str:
    """The last column: the outcome, else the detail; a canary's events carry both (verdict and figures)."""
    if str(entry.get("event", "")).startswith("canary"):
        return " ".join(str(entry[key]) for key in ("outcome", "detail") if entry.get(key))
    return entry.get("outcome", "") or entry.get("detail", "")


def table(entries) -> list:
    """Rows of text: time, who, event, task, instance, from -> to, seconds, outcome."""
    rows = [f"{'time':<20} {'who':<22} {'event':<12} {'task':<16} {'instance':<18} {'from -> to':<27} {'secs':>6}  outcome"]
    for e in entries:
        change = ""
        if e.get("from") or e.get("to"):
            change = f"{str(e.get('from') or '-')[:12]}->{str(e.get('to') or '-')[:12]}"
        secs = f"{e['seconds']:.2f}" if isinstance(e.get("seconds"), (int, float)) else ""
        rows.append(f"{e.get('time', ''):<20} {str(e.get('who', ''))[:22]:<22} {e.get('event', ''):<12} "
                    f"{e.get('task', ''):<16} {e.get('instance', ''):<18} {change:<27} {secs:>6}  "
                    f"{_note(e)}".rstrip())
    return rows
