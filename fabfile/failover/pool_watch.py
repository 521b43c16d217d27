"""Watching the victim's pool in HAProxy: its rows, bounded waits for DOWN/UP, the pre-flight."""

from __future__ import annotations

from collections.abc import Callable

from ..capacity import CapacityFloor
from ..haproxy_state import PoolView
from ..polling import WaitTimeout, wait_until
from .checks import StepFailed


class PoolWatch:
    """Mixin of FailoverTest: reads ``self.runtime`` for ``self.settings.pool``."""

    def _pool_rows(self) -> list:
        return PoolView.read(self.runtime, self.settings.pool).rows

    def _victim_stat(self):
        for stat in self._pool_rows():
            if stat.server == self.settings.victim:
                return stat
        raise StepFailed(f"{self.settings.victim} is no longer in {self.settings.pool}")

    def _wait_victim(self, label: str, done: Callable, timeout: float):
        """Poll the victim's HAProxy state until ``done(stat)``; remember every state change seen."""
        changes = self.transitions.setdefault(label, [])

        def probe():
            stat = self._victim_stat()
            if not changes or changes[-1][1] != stat.status:
                changes.append((self.clock(), stat.status))
            return stat

        try:
            return wait_until(probe, timeout=timeout, interval=self.settings.poll_interval, done=done,
                              clock=self.clock, sleep=self.sleep, what=f"{self.settings.victim} {label} in {self.settings.pool}")
        except WaitTimeout as exc:
            last = exc.last_value
            seen = f"last seen {last.status} (check {last.last_check or '-'})" if last is not None else "no state read"
            error = f"; last error: {exc.last_error}" if exc.last_error is not None else ""
            raise StepFailed(f"timed out after {timeout:g}s: {self.settings.victim} never {label} in "
                             f"{self.settings.pool}; {seen}{error}; states: {self._path(label)}") from None

    def _path(self, label: str) -> str:
        """``UP@-0.10 → UP 1/3@0.52 → DOWN@1.31`` (seconds after t0)."""
        return " → ".join(f"{status}@{self._rel(t):.2f}" for t, status in self.transitions.get(label, [])) or "-"

    def _settled_rows(self) -> list:
        """The pool's rows once no server is in an in-between state, waiting at most settle_timeout.

        A reload or a restart a moment ago leaves transitional states (``haproxy_state.transitional``:
        "UP 1/3", NOLB) for a few checks; those are "not yet", while DOWN and MAINT are final and are
        judged at once.
        """
        try:
            return wait_until(self._pool_rows, timeout=self.settings.settle_timeout, interval=0.25,
                              done=lambda rows: not any(stat.is_transitional for stat in rows),
                              clock=self.clock, sleep=self.sleep, what=f"{self.settings.pool} states to settle").value
        except WaitTimeout as exc:
            return exc.last_value or []

    def _preflight(self):
        rows = self._settled_rows()
        victim = self.settings.victim
        pool = self.settings.pool
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
