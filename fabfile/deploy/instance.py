"""One deploy target and what a rollout records of it: timings, outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

from .artifact import Artifact
from .commands import ServiceCommands


@dataclass
class Timeouts:
    drain: float = 30.0
    health: float = 30.0
    haproxy_up: float = 60.0
    interval: float = 0.2
    soak: float = 5.0  # health must stay 200 this long after ready (0 disables)
    # One round trip per soak probe: a batch soaks many instances at once on a small machine.
    soak_interval: float = 0.5
    settle: float = 10.0  # preflight waits this long for transitional pool states (UP 1/3...) to settle
    runtime_grace: float = 3.0  # a balancer's runtime API failing this long in a row (not a restart) ends a wait


@dataclass
class InstanceOutcome:
    name: str
    status: str  # ok | changed | rolled-back | failed | untouched | interrupted
    seconds: float = 0.0
    phases: dict = field(default_factory=dict)
    detail: str = ""
    state: str = ""  # where the instance was left: "ready (UP)", "MAINT", ...
    target: str = ""  # sha256 this run put (or meant to put) live
    old: str = ""  # sha256 it replaced ("none" on a first deploy)


class Instance:
    """One deploy target: carries out its ``ServiceCommands`` through its transport."""

    def __init__(self, name, transport, settings):
        self.name = name
        self.transport = transport
        self.settings = settings
        self.commands = ServiceCommands(settings)

    def facts(self) -> dict:
        return self.commands.parse_facts(self.transport.run(self.commands.facts()).stdout)

    def health(self) -> tuple:
        """(HTTP status, body) of the health path, asked on the instance itself."""
        return self.commands.parse_health(self.transport.run(self.commands.health(), warn=True).stdout)

    def soak_probe(self) -> tuple:
        """(main PID, HTTP status of the health path) in one round trip."""
        return self.commands.parse_soak_probe(self.transport.run(self.commands.soak_probe(), warn=True).stdout)

    def identity(self) -> tuple:
        """(running sha256, systemd restarts since the deploy's restart)."""
        return self.commands.parse_identity(self.transport.run(self.commands.identity_probe(), warn=True).stdout)

    def stage(self, artifact: Artifact) -> None:
        """Upload to this run's temporary name (born 0700 root-only) and verify it; the service is untouched."""
        self.transport.run(self.commands.discard_leftovers())
        self.transport.put(artifact.path, self.commands.incoming, mode="0700")
        self.transport.run(self.commands.stage_incoming(artifact.sha256))

    def install(self) -> None:
        """The staged binary goes live on disk; the current one is kept as .prev."""
        self.transport.run(self.commands.install_incoming())

    def discard_staged(self) -> None:
        self.transport.run(self.commands.discard_incoming(), warn=True)

    def swap_with_prev(self) -> None:
        self.transport.run(self.commands.swap_with_prev())

    def restore_prev(self) -> None:
        self.transport.run(self.commands.restore_prev())

    def restart(self) -> None:
        self.transport.run(self.commands.restart())
