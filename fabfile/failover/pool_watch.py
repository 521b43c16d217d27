"""Watching the victim's pool in HAProxy: its rows, bounded waits for DOWN/UP, the pre-flight."""

from __future__ import annotations

from collections.abc import Callable

from ..capacity import CapacityFloor
from ..haproxy_state import PoolView
from ..polling import WaitTimeout, wait_until
from .checks import StepFailed


class PoolWatch:
    """The victim's pool as HAProxy's runtime API shows it (``runtime``: ``show_stat()`` of every balancer),
    for one ``FailoverTest``: its pre-flight (all UP, the ``floor`` holds without the victim), waits for
    the victim's DOWN and UP (every state change seen is kept in ``transitions``), the final pool."""

    def __init__(self, test, runtime, floor=None):
        self.test = test
        self.runtime = runtime
        self.floor = floor  # capacity.CapacityFloor of the pool (default: one server UP)
        self.transitions: dict = {}  # wait name -> [(clock time, HAProxy status)]
        self.others: list = []  # the pool's servers but the victim
        self.final_pool: list = []

    def pool_rows(self) -> list:
        return PoolView.read(self.runtime, self.test.settings.pool).rows

    def _victim_stat(self):
        for stat in self.pool_rows():
            if stat.server == self.test.settings.victim:
                return stat
        raise StepFailed(f"{self.test.settings.victim} is no longer in {self.test.settings.pool}")

    def wait_victim(self, label: str, done: Callable, timeout: float):
        """Poll the victim's HAProxy state until ``done(stat)``; remember every state change seen."""
        changes = self.transitions.setdefault(label, [])

        def probe():
            stat = self._victim_stat()
            if not changes or changes[-1][1] != stat.status:
                changes.append((self.test.clock(), stat.status))
            return stat

        try:
            return wait_until(probe, timeout=timeout, interval=self.test.settings.poll_interval, done=done,
                              clock=self.test.clock, sleep=self.test.sleep, what=f"{self.test.settings.victim} {label} in {self.test.settings.pool}")
        except WaitTimeout as exc:
            last = exc.last_value
            seen = f"last seen {last.status} (check {last.last_check or '-'})" if last is not None else "no state read"
            error = f"; last error: {exc.last_error}" if exc.last_error is not None else ""
            raise StepFailed(f"timed out after {timeout:g}s: {self.test.settings.victim} never {label} in "
                             f"{self.test.settings.pool}; {seen}{error}; states: {self.path(label)}") from None

    def path(self, label: str) -> str:
        """``UP@-0.10 → UP 1/3@0.52 → DOWN@1.31`` (seconds after t0)."""
        return " → ".join(f"{status}@{self.test.marks.rel(t):.2f}" for t, status in self.transitions.get(label, [])) or "-"

    def _settled_rows(self) -> list:
        """The pool's rows once no server is in an in-between state, waiting at most settle_timeout.

        A reload or a restart a moment ago leaves transitional states (``haproxy_state.transitional``:
        "UP 1/3", NOLB) for a few checks; those are "not yet", while DOWN and MAINT are final and are
        judged at once.
        """
        try:
            return wait_until(self.pool_rows, timeout=self.test.settings.settle_timeout, interval=0.25,
                              done=lambda rows: not any(stat.is_transitional for stat in rows),
                              clock=self.test.clock, sleep=self.test.sleep, what=f"{self.test.settings.pool} states to settle").value
        except WaitTimeout as exc:
            return exc.last_value or []

    def preflight(self):
        rows = self._settled_rows()
        victim = self.test.settings.victim
        pool = self.test.settings.pool
        if not rows:
            raise StepFailed(f"HAProxy has no servers in {pool}; run haproxy.setup; nothing was stopped")
        names = [stat.server for stat in rows]
        if victim not in names:
            raise StepFailed(f"{victim} is not a server of {pool} ({', '.join(names)}); nothing was stopped")
        self.others = [name for name in names if name != victim]
        if not self.others:
            raise StepFailed(f"{victim} is the only server of {pool}: stopping it would be an outage; nothing was stopped")
        states = ", ".join(f"{stat.server} {stat.status}" for stat in rows)
        not_up = [stat for stat in rows if not stat.is_up]
        if not_up:
            which = "; ".join(f"{stat.server} is {stat.status or '?'} (check {stat.last_check or '-'}"
                              f"{': ' + stat.last_check_detail if stat.last_check_detail else ''})"
                              for stat in not_up)
            raise StepFailed(f"{which} — the pool must be all UP first; nothing was stopped", {"pool": states})
        floor = self.floor or CapacityFloor(pool, len(names), 1)
        up = {stat.server for stat in rows if stat.is_up}
        if floor.would_break(victim, up):
            raise StepFailed(f"stopping {victim} would leave {floor.describe()} UP in {pool} (deploy_min_up "
                             f"{floor.min_up}); nothing was stopped")
        return f"{pool}: {states}", {"pool": states}

    def show_final(self) -> None:
        """The pool's last state, kept for the report and printed (the report matters more than this line)."""
        try:
            rows = self.pool_rows()
        except Exception as exc:  # noqa: BLE001
            self.test.output.line(f"final {self.test.settings.pool}: cannot read HAProxy state: {exc}")
            return
        self.final_pool = [{"server": s.server, "status": s.status, "last_check": s.last_check} for s in rows]
        self.test.output.line(f"final {self.test.settings.pool}: " + ", ".join(
            f"{s.server} {s.status} ({s.last_check or '-'})" for s in rows))
