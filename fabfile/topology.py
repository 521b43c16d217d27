"""Where things are, built once per task from the inventory and passed down: the balancers, the VIP,
the runtime API of each balancer, and the control host (the deploy lock and the audit trail).

``Topology.of(loaded)`` checks the balancer group (at most a keepalived pair, ``lb_vip`` valid) and
reads nothing live. Two things are decided on first use and then kept for the whole task:

- ``control_host()``: where the deploy lock *and* the audit trail live, the first balancer that
  answers in inventory order (one ``true`` round trip per balancer tried; a single balancer is
  chosen without asking). Lock and audit are read from the same object, so they can never land on
  two balancers. With the first balancer of a pair down, a setup of the other still takes a lock
  there; two workstations that disagree on who answers could each take one, but a deploy needs
  every balancer's runtime API, so that window is limited to setup runs while a balancer is down.
- ``runtime()``: every balancer's admin runtime API as one ``BalancerSet``.
"""

from __future__ import annotations

from .exits import UsageError
from .services import BALANCER_GROUP


class Topology:
    """The balancer side of one inventory, as the tasks and engines use it."""

    def __init__(self, loaded, balancers, pair):
        self.inventory = loaded
        self.balancers = list(balancers)  # inventory order; one, or the keepalived pair
        self.pair = pair  # lb_pair.Pair, or None without lb_vip
        self._control = None
        self._runtime = None
        self._transports = {}

    @classmethod
    def of(cls, loaded) -> "Topology":
        """The checked topology of ``loaded`` (UsageError / InvalidValue: exit 2, nothing touched)."""
        from .lb_pair import pair_settings

        hosts = loaded.group(BALANCER_GROUP)
        if not hosts:
            raise UsageError(f"{loaded.path}: no '{BALANCER_GROUP}' group; HAProxy's runtime API is reached "
                             "through its hosts")
        return cls(loaded, hosts, pair_settings(BALANCER_GROUP, hosts, list(loaded.hosts.values())))

    # -- addresses ----------------------------------------------------------------------------------------
    @property
    def vip(self) -> str | None:
        return self.pair.vip if self.pair is not None else None

    def client_address(self) -> str:
        """Where clients reach HAProxy: the VIP when there is one, else the first balancer's address."""
        if self.pair is not None:
            return self.pair.vip
        first = self.balancers[0]
        if not first.address:
            raise UsageError(f"{self.inventory.path}: haproxy host '{first.name}' has no address; set 'address'")
        return first.address

    def balancer(self, name: str):
        return next(host for host in self.balancers if host.name == name)

    # -- connections ----------------------------------------------------------------------------------------
    def transport(self, host):
        """One transport per balancer for the whole task."""
        from .transports import connect

        if host.name not in self._transports:
            self._transports[host.name] = connect(host)
        return self._transports[host.name]

    def runtime_api(self, host):
        """The admin runtime API of one balancer, at the socket its haproxy.cfg renders."""
        from .haproxy_runtime import RuntimeAPI
        from .roles.haproxy_vars import DEFAULTS

        return RuntimeAPI(self.transport(host), host.vars_with(DEFAULTS)["haproxy_admin_socket"])

    def runtime(self):
        """Every balancer's runtime API driven as one (``BalancerSet``): the rollout and the gates see all."""
        from .balancers import BalancerSet

        if self._runtime is None:
            self._runtime = BalancerSet([self.runtime_api(host) for host in self.balancers])
        return self._runtime

    def control_host(self):
        """Where the deploy lock and the audit trail live: the first balancer that answers (decided once)."""
        if self._control is None:
            self._control = self._elect()
        return self._control

    def control_transport(self):
        """A connection of its own to the control host (the lock's heartbeat and the audit writer each
        run in their own thread)."""
        from .transports import connect

        return connect(self.control_host())

    def _elect(self):
        from .shell import Command
        from .transports import TransportError

        if len(self.balancers) == 1:
            return self.balancers[0]
        for host in self.balancers:
            try:
                if self.transport(host).run(Command("true", timeout=5), warn=True).exited == 0:
                    return host
            except (TransportError, OSError):
                continue
        return self.balancers[0]
