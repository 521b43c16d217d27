"""The deploy lock's commands, as data (pure: nothing here runs anything).

The lock lives on the balancer group's *first* host (``services.BALANCER_GROUP``):
a directory ``/var/lock/veza-ops/deploy.lock`` taken with ``mkdir`` (atomic),
with ``owner.json`` inside written in the same round trip. ``/var/lock`` is a
tmpfs on Debian: a balancer reboot clears the lock, which is what we want (no
deploy survives it). With a keepalived pair the lock lives on the first balancer that
answers, in inventory order (``Topology.control_host``): normally the first; the
second only while the first is down (then only setup runs can proceed: a deploy needs
every balancer's runtime API).

The heartbeat is the mtime of ``owner.json``, refreshed by the holder; the age
is computed with the balancer's own clock, so workstation clock skew does not
matter. ``deploy/locking.py`` carries these commands out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..shell import Command, q

LOCK_ROOT = "/var/lock/veza-ops"
LOCK_DIR = f"{LOCK_ROOT}/deploy.lock"
OWNER = f"{LOCK_DIR}/owner.json"
HEARTBEAT_SECONDS = 3.0
DEFAULT_STALE_SECONDS = 60.0

TAKEN = "taken"
HELD = "held"
FREE = "free"


@dataclass(frozen=True)
class LockState:
    """What ``status()``/``acquire()`` report: taken by us, held by someone, or free."""

    state: str  # taken | held | free
    owner: dict
    age: float | None = None  # seconds since the last heartbeat, by the balancer's clock

    def stale(self, stale_seconds: float) -> bool:
        return self.state == HELD and self.age is not None and self.age > stale_seconds

    def holder(self) -> str:
        """Who holds the lock, as another workstation wrote it: masked and escaped before anyone reads it."""
        from ..masking import safe_line

        o = self.owner
        sha256 = o.get("sha256")
        return safe_line(f"{o.get('who', '?')} pid {o.get('pid', '?')} running {o.get('task', '?')}"
                         f"{' sha256 ' + str(sha256)[:12] if sha256 else ''}"
                         f"{' (' + repr(o['message']) + ')' if o.get('message') else ''} since {o.get('started', '?')}")


def owner_record(*, who: str, pid: int, run: str, task: str, sha256: str | None, message: str | None,
                 started: str) -> dict:
    return {"who": who, "pid": pid, "run": run, "task": task, "sha256": sha256, "message": message,
            "started": started}


def _describe() -> str:
    """Prints ``held``, the owner JSON on one line, then the heartbeat age in seconds."""
    owner = q(OWNER)
    return (f"echo {HELD}; (tr -d '\\n' < {owner} 2>/dev/null || echo '{{}}'); echo; "
            f"echo $(( $(date +%s) - $(stat -c %Y {owner} 2>/dev/null || date +%s) ))")


def acquire(owner: dict) -> Command:
    """Take the lock atomically and write its owner in one round trip, or describe the holder.

    Exit 0 in both cases (stdout says which); a non-zero exit is the lock directory
    itself being unusable (not writable, read-only).
    """
    record = json.dumps(owner, sort_keys=True)
    return Command(
        f"mkdir -p {q(LOCK_ROOT)} || exit 2; "
        f"if mkdir {q(LOCK_DIR)} 2>/dev/null; then printf '%s\\n' {q(record)} > {q(OWNER)} || "
        f"{{ rm -rf {q(LOCK_DIR)}; exit 2; }}; echo {TAKEN}; "
        f"elif [ -d {q(LOCK_DIR)} ]; then {_describe()}; else exit 2; fi",
        timeout=15,
    )


def status() -> Command:
    return Command(f"if [ -d {q(LOCK_DIR)} ]; then {_describe()}; else echo {FREE}; fi", timeout=15)


def parse(stdout: str) -> LockState:
    lines = stdout.splitlines()
    head = lines[0].strip() if lines else FREE
    if head != HELD:
        return LockState(head if head in (TAKEN, FREE) else FREE, {})
    try:
        owner = json.loads(lines[1]) if len(lines) > 1 and lines[1].strip() else {}
    except ValueError:
        owner = {}
    try:
        age = float(lines[2]) if len(lines) > 2 else None
    except ValueError:
        age = None
    return LockState(HELD, owner if isinstance(owner, dict) else {}, age)


def _owned_by(run: str) -> str:
    return f"grep -qF {q(json.dumps(run))} {q(OWNER)} 2>/dev/null"


def heartbeat(run: str) -> Command:
    """Refresh the heartbeat (the owner file's mtime), only while the lock is still ours."""
    return Command(f"{_owned_by(run)} && touch {q(OWNER)}", timeout=10)


def release(run: str) -> Command:
    """Remove the lock only if this run holds it (a forced takeover is never undone by the old holder)."""
    return Command(f"if {_owned_by(run)}; then rm -rf {q(LOCK_DIR)}; fi", timeout=15)


def force_release() -> Command:
    return Command(f"rm -rf {q(LOCK_DIR)}", timeout=15)
