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
HAProxy. Every stopper has ``stop()``, ``start()``, ``describe(action)`` and ``method``; a stopper that
knows the moment of death exactly (``killed_at``, the node's own clock) gives the gate its t0.
"""

from __future__ import annotations

import time

from .. import incus
from ..incus_api import Incus
from ..process import ProcessNotFound
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
