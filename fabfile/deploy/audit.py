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
    from ..masking import mask_data

    return mask_data(entry)  # an audit line holds no secret: registered values and secret-named fields masked


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
    return str(entry.get("outcome", "") or entry.get("detail", "") or "")


def table(entries) -> list:
    """Rows of text: time, who, event, task, instance, from -> to, seconds, outcome.

    Lines come from a file on a host: any field may hold anything (a list, a number, an escape
    sequence), so every cell is text, masked and with its control characters escaped."""
    from ..masking import safe_line

    rows = [f"{'time':<20} {'who':<22} {'event':<12} {'task':<16} {'instance':<18} {'from -> to':<27} {'secs':>6}  outcome"]
    for e in entries:
        def cell(key, width=None):
            text = safe_line(e.get(key) if e.get(key) is not None else "")
            return text[:width] if width else text
        change = ""
        if e.get("from") or e.get("to"):
            change = f"{(cell('from') or '-')[:12]}->{(cell('to') or '-')[:12]}"
        seconds = e.get("seconds")
        secs = f"{seconds:.2f}" if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else ""
        rows.append(f"{cell('time'):<20} {cell('who', 22):<22} {cell('event'):<12} {cell('task'):<16} "
                    f"{cell('instance'):<18} {change:<27} {secs:>6}  {safe_line(_note(e))}".rstrip())
    return rows
