"""How the failover test kills and revives its victim, as commands (data) and their runner.

Two deaths that announce themselves (the kernel closes the sockets, HAProxy sees refused
connections) and two that do not:

``incus``   the whole container dies at once (``incus stop --force``), through the project's Incus driver
``unit``    only the service dies (SIGKILL, then ``systemctl stop``), through the victim's transport
``freeze``  the service's main process hangs (SIGSTOP; SIGCONT to recover): a GC pause, a deadlock, a
            stuck disk. The kernel still accepts connections, so requests sent to it just wait.
``drop``    the service's port goes silent: an nftables table inside the victim drops its traffic both
            ways (deleted to recover), as a dead switch port or a firewall mistake would.

And for a balancer (``test.lb-failover``): ``IncusStopper`` for its container, ``ProcessKiller`` for its
HAProxy. For a whole Incus host nested in the lab (``test.host-failover``, ``HOST_METHODS``): ``stop``
(its outer container, ``incus stop --force``), ``freeze`` (``incus pause``: every process on it hangs,
the kernel still answers ARP and SYNs) and ``cut`` (``LinkCut``: the outer container's port on the lab
bridge set down on this machine, a pulled cable). Every stopper has ``stop()``, ``start()``, ``describe(action)`` and ``method``; a stopper that
knows the moment of death exactly (``killed_at``, the node's own clock) gives the gate its t0.
"""

from __future__ import annotations

import json
import time

from .. import incus
from ..incus_api import Incus
from ..process import ProcessNotFound, run_argv
from ..shell import argv_line, q

STOP_METHODS = ("incus", "unit", "freeze", "drop")
# Seconds from the stop to DOWN we aim for (reported, not enforced): a death the kernel announces
# is seen by the traffic at once; a hang or a silent drop only by the checks (1 s + 3 misses).
DOWN_TARGETS = {"incus": 2.0, "unit": 2.0, "freeze": 3.0, "drop": 3.0}
DROP_TABLE = "veza_failover_drop"  # the nftables table the drop method owns (inet family)
STOP_COMMAND_TIMEOUT = 120  # seconds for one incus stop/start (a container boot included)


class StopperError(Exception):
    """Stopping or starting the victim failed."""


class IncusStopper:
    """The whole container dies at once, as a host crash would: ``incus stop --force``.

    Runs the incus CLI on this machine; an instance named ``remote:name``
    makes it address that remote.
    """

    method = "incus"

    def __init__(self, instance: str, driver: Incus | None = None):
        self.instance = instance
        self.driver = driver or Incus()

    def stop_command(self) -> list:
        return incus.stop_argv(self.instance)

    def start_command(self) -> list:
        return incus.start_argv(self.instance)

    def _incus(self, argv: list, *, tolerate: str = "") -> None:
        try:
            done = self.driver.run(*argv[1:], timeout=STOP_COMMAND_TIMEOUT, check=False)
        except ProcessNotFound:
            raise StopperError("incus CLI not found on this machine; use --stop-method unit") from None
        if done.exited == 124:
            raise StopperError(f"{argv_line(argv)}: no answer in {STOP_COMMAND_TIMEOUT}s")
        output = (done.stderr or done.stdout or "").strip()
        if not done.ok and not (tolerate and tolerate in output.lower()):
            raise StopperError(f"{argv_line(argv)}: exit {done.exited}: {output.splitlines()[-1:] or ''}")

    def stop(self) -> None:
        self._incus(self.stop_command())

    def start(self) -> None:
        # Starting an instance that already runs is what we want, not an error.
        self._incus(self.start_command(), tolerate="already running")

    def describe(self, action: str) -> str:
        return argv_line(self.stop_command() if action == "stop" else self.start_command())


class HostFreeze(IncusStopper):
    """Every process of the host hangs at once (``incus pause``: the cgroup freezer), its network stack
    still answering; ``incus resume`` thaws it. Resuming a running host is not an error."""

    method = "freeze"

    def stop_command(self) -> list:
        return [incus.INCUS, "pause", "--", self.instance]

    def start_command(self) -> list:
        return [incus.INCUS, "resume", "--", self.instance]

    def start(self) -> None:
        self._incus(self.start_command(), tolerate="already running")


class HostStop(IncusStopper):
    """The whole host dies (``incus stop --force`` of its outer container); ``incus start`` boots it and
    its Incus starts the instances that were running."""

    method = "stop"


class LinkCut:
    """The host cut off the network by this machine: its outer container's port on the lab bridge (the
    host side of its veth) set down, as a pulled cable; the host sees its link lose carrier (its macvlan
    instances with it) and keeps its addresses and routes. Set up again to reconnect.

    Only a port of the lab bridge is touched: the device is read from Incus when cutting and refused
    unless the bridge ``network`` is its master."""

    method = "cut"

    def __init__(self, instance: str, network: str, driver: Incus | None = None, run=run_argv):
        self.instance, self.network = instance, network
        self.driver = driver or Incus()
        self.run = run
        self.device = None  # the host-side veth, known once read

    def _port(self) -> str:
        """The host side of the outer container's eth0, checked to be a port of the lab bridge."""
        state = self.driver.query(f"/1.0/instances/{self.instance}/state") or {}
        device = ((state.get("network") or {}).get("eth0") or {}).get("host_name") or ""
        if not device:
            raise StopperError(f"{self.instance}: no host-side device for eth0 (is it running?)")
        master = self._link(device).get("master") or ""
        if master != self.network:
            raise StopperError(f"{self.instance}: {device} is on '{master or 'no bridge'}', not the lab bridge "
                               f"{self.network}; refusing to touch it")
        return device

    def _link(self, device: str) -> dict:
        return parse_link(self.run(["ip", "-json", "link", "show", "dev", device], timeout=10).stdout)

    def _set(self, state: str) -> None:
        if self.device is None:
            self.device = self._port()
        done = self.run(link_argv(self.device, state), timeout=10)
        if not done.ok:
            raise StopperError(f"{done.command}: exit {done.exited}: {done.tail(2)}")

    def stop(self) -> None:
        self._set("down")

    def start(self) -> None:
        self._set("up")

    def is_cut(self) -> bool:
        """The port exists and is set down (what an interrupted cut that never got to set it up leaves)."""
        try:
            self.device = self._port()
        except StopperError:
            return False
        return "UP" not in self._link(self.device).get("flags", ["UP"])

    def describe(self, action: str) -> str:
        device = self.device or f"<{self.instance} eth0 port on {self.network}>"
        return argv_line(link_argv(device, "down" if action == "stop" else "up"))


def link_argv(device: str, state: str) -> list:
    return ["ip", "link", "set", "dev", device, state]


def parse_link(ip_json: str) -> dict:
    """One device from ``ip -json link show dev X`` (its ``master`` bridge, ``flags``); {} when unreadable."""
    try:
        link = (json.loads(ip_json or "[]") or [{}])[0]
    except (ValueError, IndexError):
        return {}
    return link if isinstance(link, dict) else {}


HOST_METHODS = ("stop", "freeze", "cut")


def undo_host_leftovers(instance: str, network: str, driver: Incus | None = None) -> list:
    """Bring back a host an earlier drill killed mid-way (by SIGKILL, or a lost terminal) left out:
    frozen, stopped, or its port down. Each undo is a no-op on a healthy host; returns what was done."""
    driver = driver or Incus()
    status = (driver.query(f"/1.0/instances/{instance}/state") or {}).get("status")
    done = []
    if status == "Frozen":
        HostFreeze(instance, driver).start()
        done.append(f"{instance} was frozen: resumed")
    elif status == "Stopped":
        HostStop(instance, driver).start()
        done.append(f"{instance} was stopped: started")
    cut = LinkCut(instance, network, driver)
    if network and cut.is_cut():
        cut.start()
        done.append(f"{cut.device} was down: set up")
    return done


def make_host_stopper(method: str, instance: str, network: str):
    """The stopper of a whole nested Incus host (its outer container ``instance`` on this machine)."""
    if method not in HOST_METHODS:
        raise ValueError(f"--method {method}: use one of {', '.join(HOST_METHODS)}")
    incus.instance_ref(instance)  # a plain name: it goes after `--` and into an API path
    if method == "cut":
        return LinkCut(instance, network)
    return HostStop(instance) if method == "stop" else HostFreeze(instance)


class CommandStopper:
    """A stop and a start command run through the victim's transport (``unit``, ``freeze``, ``drop``)."""

    def __init__(self, method: str, transport, stop_command: str, start_command: str):
        self.method = method
        self.transport = transport
        self._commands = {"stop": stop_command, "start": start_command}

    def stop_command(self) -> str:
        return self._commands["stop"]

    def start_command(self) -> str:
        return self._commands["start"]

    def _run(self, command: str) -> None:
        result = self.transport.run(command, warn=True, timeout=STOP_COMMAND_TIMEOUT)
        if not result.ok:
            raise StopperError(f"{self.transport.name}: {command}: exit {result.exited}: {result.tail(2)}")

    def stop(self) -> None:
        self._run(self.stop_command())

    def start(self) -> None:
        self._run(self.start_command())

    def describe(self, action: str) -> str:
        return f"{self.transport.name}: {self._commands[action]}"


class ProcessKiller:
    """``kill -9`` of every haproxy process (the unit's cgroup), then ``systemctl stop`` so that
    Restart= does not revive it during the test; the kill's own time is read back from the node."""

    method = "process"

    def __init__(self, transport):
        self.transport = transport
        self.killed_at = None  # monotonic time of the SIGKILL, from the node's clock

    def stop_command(self) -> str:
        return "systemctl kill --signal=SIGKILL haproxy && date +%s.%N; systemctl stop haproxy"

    def stop(self) -> None:
        result = self.transport.run(self.stop_command(), warn=True, timeout=60)
        if not result.ok:
            raise RuntimeError(f"{self.transport.name}: {self.stop_command()}: exit {result.exited}: {result.tail(2)}")
        try:
            self.killed_at = float(result.stdout.split()[0]) - (time.time() - time.monotonic())
        except (IndexError, ValueError):
            self.killed_at = None

    def start(self) -> None:
        result = self.transport.run("systemctl start haproxy", warn=True, timeout=60)
        if not result.ok:
            raise RuntimeError(f"{self.transport.name}: systemctl start haproxy: exit {result.exited}: {result.tail(2)}")

    def describe(self, action: str) -> str:
        return f"{self.transport.name}: {self.stop_command() if action == 'stop' else 'systemctl start haproxy'}"


def unit_commands(unit: str) -> tuple:
    """SIGKILL (no graceful shutdown, like a crash), then ``systemctl stop`` so that the unit's
    ``Restart=on-failure`` does not bring it back during the down window; ``systemctl start`` after."""
    unit = q(unit)
    return f"systemctl kill --signal=SIGKILL {unit}; systemctl stop {unit}", f"systemctl start {unit}"


def freeze_commands(unit: str) -> tuple:
    """SIGSTOP to the unit's main process only (its sockets stay open: connections are accepted and
    never answered); SIGCONT to the same. Sending SIGCONT to a running process is harmless, so the
    start command also repairs a freeze an earlier, killed run left behind."""
    unit = q(unit)
    return (f"systemctl kill --kill-whom=main --signal=SIGSTOP {unit}",
            f"systemctl kill --kill-whom=main --signal=SIGCONT {unit}")


def drop_commands(port: int) -> tuple:
    """An nftables table dropping the service port's packets in both directions (new and established
    connections, health checks included), installed in one transaction; deleting the table recovers.
    ``add`` + ``flush`` make a repeated stop converge on one table instead of failing."""
    port = int(port)
    table = f"inet {DROP_TABLE}"
    hook = "type filter hook {} priority -100; policy accept;"
    script = "; ".join([
        f"add table {table}", f"flush table {table}",
        f"add chain {table} input {{ {hook.format('input')} }}", f"add rule {table} input tcp dport {port} drop",
        f"add chain {table} output {{ {hook.format('output')} }}", f"add rule {table} output tcp sport {port} drop",
    ])
    missing = "echo 'nft not found: add nftables to common_packages and run inv common.setup' >&2; exit 127"
    return (f"command -v nft >/dev/null || {{ {missing}; }}; nft {q(script)}",
            f"if nft list table {table} >/dev/null 2>&1; then nft delete table {table}; fi")


def make_stopper(method: str | None, host, transport, unit: str, port: int):
    """The stopper for ``--stop-method`` (default: incus for an incus-connected victim, else unit)."""
    method = method or ("incus" if host.connection == "incus" else "unit")
    if method not in STOP_METHODS:
        raise ValueError(f"--stop-method {method}: use one of {', '.join(STOP_METHODS)}")
    if method == "incus":
        if host.connection != "incus":
            raise ValueError(f"--stop-method incus: {host.name} is not reached through incus; use --stop-method unit")
        try:
            return IncusStopper(incus.instance_ref(host.vars.get("incus_name", host.name), host.vars.get("incus_remote")))
        except incus.IncusError as exc:
            raise ValueError(str(exc)) from None
    commands = {"unit": lambda: unit_commands(unit), "freeze": lambda: freeze_commands(unit),
                "drop": lambda: drop_commands(port)}[method]()
    return CommandStopper(method, transport, *commands)
