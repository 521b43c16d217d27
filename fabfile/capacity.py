"""The capacity floor of a pool: how many of its servers must stay UP while we change it (pure).

One ``CapacityFloor`` per pool, built once per task from the inventory (``of_pool``) and used by
everything that takes servers out: a deploy or rollback (which batch may go out, the pre-flight
refusal), a setup play (how many restarts run at once) and the failover test (it may stop its
victim only when the rest of the pool still holds the floor).

``deploy_min_up`` (N, or P% of the pool; default 1) is a property of the pool: every host of the
pool must agree on it (a host-level override on one instance is refused, since the floor would
then depend on ``--limit``). A floor that keeps every server of a pool of two or more UP is refused
up front (InvalidValue: one line, exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from .values import InvalidValue, count_or_percent

DEFAULT_MIN_UP = 1


@dataclass(frozen=True)
class CapacityFloor:
    pool: str  # HAProxy's backend name
    size: int  # servers of the pool in the inventory
    min_up: int  # servers that must stay UP
    # deploy_min_up_per_host (placement.py): servers of the pool kept UP on each Incus host, and
    # (server, host) pairs saying where each one lives; 0 / () without that rule.
    min_up_per_host: int = 0
    hosts: tuple = ()

    def with_hosts(self, hosts) -> "CapacityFloor":
        """This floor plus ``deploy_min_up_per_host`` from the pool's ``hosts`` (placement.per_host_floor)."""
        from .placement import check_per_host_floor, host_of, per_host_floor

        floor = per_host_floor(hosts)
        check_per_host_floor(self.pool, hosts, floor)
        return CapacityFloor(self.pool, self.size, self.min_up, floor, tuple((host.name, host_of(host)) for host in hosts))

    def _empties_host(self, name: str, up_now) -> bool:
        from .placement import would_empty_host

        return would_empty_host(name, set(up_now), dict(self.hosts), self.min_up_per_host)

    @classmethod
    def parse(cls, pool: str, spec, size: int) -> "CapacityFloor":
        """``deploy_min_up`` as given (N or P% of ``size``), checked."""
        min_up = count_or_percent("deploy_min_up", spec, size, low=0)
        if size > 1 and min_up >= size:
            raise InvalidValue(f"deploy_min_up: {spec} keeps all {size} servers of {pool} UP, so no server can "
                               f"go out; lower it to at most {size - 1}")
        return cls(pool, size, min_up)

    @classmethod
    def of_pool(cls, pool: str, hosts, defaults=None) -> "CapacityFloor":
        """The floor of the pool made of ``hosts`` (the whole group, whatever ``--limit`` picked)."""
        specs = {}
        for host in hosts:
            variables = host.vars_with(defaults or {}) if defaults is not None else host.vars
            specs.setdefault(str(variables.get("deploy_min_up", DEFAULT_MIN_UP)), []).append(host.name)
        if len(specs) > 1:
            seen = "; ".join(f"{spec} on {', '.join(names)}" for spec, names in specs.items())
            raise InvalidValue(f"deploy_min_up: the hosts of {pool} disagree ({seen}); set it once for the group")
        spec = next(iter(specs), DEFAULT_MIN_UP)
        return cls.parse(pool, spec, len(hosts))

    @property
    def out_at_once(self) -> int:
        """Servers that may be out together when every one is UP."""
        return self.size - self.min_up

    @property
    def restart_slots(self) -> int:
        """Restarts a setup play runs at once on this pool (at least one: a pool of one restarts anyway)."""
        return max(1, self.out_at_once)

    def spare(self, up_now, at_risk=()) -> int:
        """UP servers that may still go out: those UP (but the ``at_risk`` ones) beyond the floor."""
        return len(set(up_now) - set(at_risk)) - self.min_up

    def would_break(self, name: str, up_now) -> bool:
        """True when ``name`` is UP and taking it out leaves fewer than ``min_up`` UP.

        A server that is not UP costs nothing: a pool with nothing UP (a first deploy, say) has no
        availability left to protect."""
        return name in up_now and (len(set(up_now)) - 1 < self.min_up or self._empties_host(name, up_now))

    def pick(self, queue, up_now, batch: int, at_risk=()) -> list:
        """The first names of ``queue`` that may go out together, at most ``batch``.

        Every UP server taken out costs one spare; a server that is not UP costs nothing. ``at_risk``
        (a batch still soaking) counts as out already: with it, the pick is the whole next batch or
        nothing, so a batch starts while another soaks only when the floor would still hold if every
        soaking instance went down as well."""
        spare = self.spare(up_now, at_risk)
        chosen = []
        for name in queue[:batch]:
            if name in up_now:
                if spare <= 0 or self._empties_host(name, set(up_now) - set(at_risk) - set(chosen)):
                    break
                spare -= 1
            chosen.append(name)
        if at_risk and len(chosen) < len(queue[:batch]):
            return []
        return chosen

    def describe(self) -> str:
        return "no server" if self.min_up <= 1 else f"fewer than {self.min_up} servers"
