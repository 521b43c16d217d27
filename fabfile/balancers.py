"""Every balancer of the group as one runtime API: what a deploy, a rollback or a test sees.

``BalancerSet(runtimes)`` has ``RuntimeAPI``'s interface, so the rollout and the
failover test drive one balancer or a keepalived pair alike:

- ``set_state`` is sent to every balancer at once (one thread each): a
  balancer that does not answer never keeps the others from getting the state (a ``ready``
  must reach the VIP holder even when its peer's HAProxy is down); afterwards one
  ``BalancersFailed`` names those that failed;
- ``show_stat`` merges rows per (pool, server) into a worst-of view: a server is UP
  only when it is UP on every balancer, its sessions are the sum (a drain waits for
  the connections of both), its last check the worst one's;
- ``server(pool, name)`` is that merged row, so a gate waiting for UP waits for UP on each.

Every balancer must answer: a deploy with one balancer down stops before changing a
server (its pool state would differ from its peer's when it comes back). When one stops
answering mid-deploy, ``answering()`` is the set of those that still do: the rollout puts
the instance back through them and stops. ``per_balancer()`` keeps the tagged rows for
status tables. Reads are sent to every balancer at once too.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .haproxy_runtime import RuntimeAPIError
from .haproxy_state import merge, rank


class BalancersFailed(RuntimeAPIError):
    """Some balancers failed a call the others carried out; ``failed`` names them, in inventory order."""

    def __init__(self, errors: dict, answered: list):
        super().__init__("; ".join(str(error) for error in errors.values()))
        self.failed = list(errors)
        self.answered = answered


class BalancerSet:
    """The runtime APIs of the group's balancers, driven as one."""

    def __init__(self, runtimes):
        if not runtimes:
            raise ValueError("a BalancerSet needs at least one balancer")
        self.runtimes = list(runtimes)
        self.name = ",".join(r.name for r in self.runtimes)
        self.address = self.runtimes[0].address

    def _each(self, call) -> list:
        """``call(runtime)`` on every balancer at once; the results in inventory order, or
        ``BalancersFailed`` once every call has ended (a failure never cuts another call short)."""
        if len(self.runtimes) == 1:
            return [call(self.runtimes[0])]
        with ThreadPoolExecutor(max_workers=len(self.runtimes), thread_name_prefix="balancer") as pool:
            futures = [pool.submit(call, runtime) for runtime in self.runtimes]
        results, errors, answered = [], {}, []
        for runtime, future in zip(self.runtimes, futures):
            try:
                results.append(future.result())
                answered.append(runtime.name)
            except Exception as exc:  # noqa: BLE001 - reported together, by balancer
                errors[runtime.name] = exc
        if errors:
            raise BalancersFailed(errors, answered)
        return results

    def per_balancer(self, *, include_aggregates: bool = False) -> list:
        """``[(balancer name, rows)]`` in inventory order."""
        rows = self._each(lambda r: r.show_stat(include_aggregates=include_aggregates))
        return [(r.name, stats) for r, stats in zip(self.runtimes, rows)]

    def show_stat(self, *, include_aggregates: bool = False) -> list:
        if len(self.runtimes) == 1:
            return self.runtimes[0].show_stat(include_aggregates=include_aggregates)
        return merge([rows for _, rows in self.per_balancer(include_aggregates=include_aggregates)])

    def server(self, pool: str, name: str):
        if len(self.runtimes) == 1:
            return self.runtimes[0].server(pool, name)
        rows = self._each(lambda r: r.server(pool, name))  # each names what exists when it lacks it
        return merge([[row] for row in rows])[0]

    def set_state(self, pool: str, server: str, state: str, health: str | None = None) -> None:
        self._each(lambda r: r.set_state(pool, server, state, health=health))

    def weights(self, pool: str, servers) -> list:
        """``[(balancer name, {server: (current, initial)})]``: each balancer's runtime weights."""
        return list(zip([r.name for r in self.runtimes], self._each(lambda r: r.weights(pool, servers))))

    def set_weights(self, pool: str, weights: dict) -> None:
        """The same weights on every balancer at once (``BalancersFailed`` names those that refused)."""
        self._each(lambda r: r.set_weights(pool, weights))

    def answering(self) -> "BalancerSet":
        """The balancers whose runtime API answers now (all of them, normally); RuntimeAPIError when none does."""
        try:
            self._each(lambda r: r.show_stat())
            return self
        except BalancersFailed as failed:
            if not failed.answered:
                raise
            return BalancerSet([r for r in self.runtimes if r.name in failed.answered])


__all__ = ["BalancerSet", "BalancersFailed", "RuntimeAPIError", "merge", "rank"]
