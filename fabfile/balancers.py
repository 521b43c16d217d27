"""Every balancer of the group as one runtime API: what a deploy, a rollback or a test sees.

``BalancerSet(runtimes)`` has ``RuntimeAPI``'s interface, so the rollout and the
failover test drive one balancer or a keepalived pair alike:

- ``set_state`` / ``set_health`` are applied to each balancer in order; the first
  refusal stops there and raises (the rollout's own rollback puts every balancer back);
- ``show_stat`` merges rows per (pool, server) into a worst-of view: a server is UP
  only when it is UP on every balancer, its sessions are the sum (a drain waits for
  the connections of both), its last check the worst one's;
- ``server(pool, name)`` is that merged row, so a gate waiting for UP waits for UP on each.

Every balancer must answer: a deploy with one balancer down stops before changing a
server (its pool state would differ from its peer's when it comes back).
``per_balancer()`` keeps the tagged rows for status tables.
"""

from __future__ import annotations

from dataclasses import replace

from .haproxy_runtime import RuntimeAPIError

# Lower is worse. A state not listed (a new HAProxy wording) counts as the worst.
_RANK = {"MAINT": 0, "DOWN": 1, "NOLB": 4, "DRAIN": 5, "no check": 6, "UP": 7}


def rank(status: str) -> int:
    if status in _RANK:
        return _RANK[status]
    if status.startswith("DOWN "):
        return 2  # going up, not there yet
    if status.startswith(("UP ", "NOLB ")):
        return 3  # going down, or slow-starting
    if status.startswith("MAINT"):
        return 0
    return 0


def merge(rows_by_balancer: list) -> list:
    """One row per (pool, server) in the first balancer's order: the worst status, summed sessions."""
    merged, order = {}, []
    for rows in rows_by_balancer:
        for stat in rows:
            key = (stat.pool, stat.server)
            current = merged.get(key)
            if current is None:
                merged[key] = stat
                order.append(key)
                continue
            worst = stat if rank(stat.status) < rank(current.status) else current
            sessions = None if current.current_sessions is None and stat.current_sessions is None else \
                (current.current_sessions or 0) + (stat.current_sessions or 0)
            merged[key] = replace(worst, current_sessions=sessions)
    return [merged[key] for key in order]


class BalancerSet:
    """The runtime APIs of the group's balancers, driven as one."""

    def __init__(self, runtimes):
        if not runtimes:
            raise ValueError("a BalancerSet needs at least one balancer")
        self.runtimes = list(runtimes)
        self.name = ",".join(r.name for r in self.runtimes)
        self.address = self.runtimes[0].address

    def per_balancer(self, *, include_aggregates: bool = False) -> list:
        """``[(balancer name, rows)]`` in inventory order."""
        return [(r.name, r.show_stat(include_aggregates=include_aggregates)) for r in self.runtimes]

    def show_stat(self, *, include_aggregates: bool = False) -> list:
        if len(self.runtimes) == 1:
            return self.runtimes[0].show_stat(include_aggregates=include_aggregates)
        return merge([rows for _, rows in self.per_balancer(include_aggregates=include_aggregates)])

    def server(self, pool: str, name: str):
        if len(self.runtimes) == 1:
            return self.runtimes[0].server(pool, name)
        rows = [r.server(pool, name) for r in self.runtimes]  # each names what exists when it lacks it
        return merge([[row] for row in rows])[0]

    def set_state(self, pool: str, server: str, state: str) -> None:
        for runtime in self.runtimes:
            runtime.set_state(pool, server, state)

    def set_health(self, pool: str, server: str, health: str) -> None:
        for runtime in self.runtimes:
            runtime.set_health(pool, server, health)


__all__ = ["BalancerSet", "RuntimeAPIError", "merge", "rank"]
