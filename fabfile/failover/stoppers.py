"""How the failover test kills and revives its victim, as commands (data) and their runner.

``IncusStopper``: the whole container dies at once (``incus stop --force``), through
the project's Incus driver; ``UnitStopper``: only the service dies (SIGKILL, then
``systemctl stop``), through the victim's transport.
"""

from __future__ import annotations

from .. import incus
from ..process import ProcessNotFound
from ..shell import argv_line, q

STOP_METHODS = ("incus", "unit")
STOP_COMMAND_TIMEOUT = 120  # seconds for one incus stop/start (a container boot included)


class StopperError(Exception):
    """Stopping or starting the victim failed."""


class IncusStopper:
    """The whole container dies at once, as a host crash would: ``incus stop --force``.

    Runs the incus CLI on this machine; an instance named ``remote:name``
    makes it address that remote.
    """

    method = "incus"

    def __init__(self, instance: str, driver: incus.Incus | None = None):
        self.instance = instance
        self.driver = driver or incus.Incus()

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


class UnitStopper:
    """Only the service dies: SIGKILL (no graceful shutdown, like a crash), then ``systemctl stop``
    so that the unit's ``Restart=on-failure`` does not bring it back during the down window."""

    method = "unit"

    def __init__(self, transport, unit: str):
        self.transport = transport
        self.unit = unit

    def stop_command(self) -> str:
        unit = q(self.unit)
        return f"systemctl kill --signal=SIGKILL {unit}; systemctl stop {unit}"

    def start_command(self) -> str:
        return f"systemctl start {q(self.unit)}"

    def _systemctl(self, command: str) -> None:
        result = self.transport.run(command, warn=True, timeout=STOP_COMMAND_TIMEOUT)
        if not result.ok:
            raise StopperError(f"{self.transport.name}: {command}: exit {result.exited}: {result.tail(2)}")

    def stop(self) -> None:
        self._systemctl(self.stop_command())

    def start(self) -> None:
        self._systemctl(self.start_command())

    def describe(self, action: str) -> str:
        return f"{self.transport.name}: {self.stop_command() if action == 'stop' else self.start_command()}"


def make_stopper(method: str | None, host, transport, unit: str):
    """The stopper for ``--stop-method`` (default: incus for an incus-connected victim, else unit)."""
    method = method or ("incus" if host.connection == "incus" else "unit")
    if method not in STOP_METHODS:
        raise ValueError(f"--stop-method {method!r}: use one of {', '.join(STOP_METHODS)}")
    if method == "incus":
        if host.connection != "incus":
            raise ValueError(f"--stop-method incus: {host.name} is not reached through incus; use --stop-method unit")
        try:
            return IncusStopper(incus.instance_ref(host.vars.get("incus_name", host.name), host.vars.get("incus_remote")))
        except incus.IncusError as exc:
            raise ValueError(str(exc)) from None
    return UnitStopper(transport, unit)
