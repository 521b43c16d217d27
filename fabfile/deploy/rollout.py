"""Rolling binary deploy and rollback for a binary_service, one instance at a time.

Orchestration only: what runs where and in which order. The per-instance
sequence is: drain in HAProxy (bounded wait for sessions to end), maint, push to
a temporary name, verify its sha256 on the host, keep the current binary as
``<name>.prev``, atomic rename, restart, health gate on the instance itself,
ready in HAProxy, wait for UP. A failure after the swap puts ``.prev`` back
through the same gates and stops the rollout: later instances stay untouched.
Before each instance the pool must keep another server UP (unless --force).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from ..polling import WaitTimeout, wait_until
from ..transports import CommandFailed, TransportError
from .artifact import ELF_MACHINES, Artifact, DeployError
from .commands import ServiceCommands


@dataclass
class Timeouts:
    drain: float = 30.0
    health: float = 30.0
    haproxy_up: float = 60.0
    interval: float = 0.2


@dataclass
class InstanceOutcome:
    name: str
    status: str  # ok | changed | rolled-back | failed | untouched
    seconds: float = 0.0
    phases: dict = field(default_factory=dict)
    detail: str = ""


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

    def push(self, artifact: Artifact) -> None:
        """Upload to this run's temporary name (born 0700 root-only), verify, keep .prev, rename."""
        self.transport.put(artifact.path, self.commands.incoming, mode="0700")
        self.transport.run(self.commands.install_incoming(artifact.sha256))

    def swap_with_prev(self) -> None:
        self.transport.run(self.commands.swap_with_prev())

    def restore_prev(self) -> None:
        self.transport.run(self.commands.restore_prev())

    def restart(self) -> None:
        self.transport.run(self.commands.restart())


class Rollout:
    """Drives instances through the gates, talking to HAProxy's runtime API."""

    def __init__(self, instances, runtime, pool: str, output, timeouts: Timeouts | None = None,
                 clock=time.monotonic, sleep=time.sleep):
        self.instances = instances
        self.runtime = runtime
        self.pool = pool
        self.output = output
        self.timeouts = timeouts or Timeouts()
        self.clock = clock
        self.sleep = sleep
        self.outcomes = []

    # -- helpers ---------------------------------------------------------
    def _say(self, name, phase, seconds, detail=""):
        self.output.line(f"{name:<16} {phase:<10} {seconds:6.2f}s  {detail}".rstrip())

    def _wait(self, probe, done, timeout, what):
        return wait_until(probe, timeout=timeout, interval=self.timeouts.interval, done=done, what=what,
                          clock=self.clock, sleep=self.sleep)

    def _timed(self, outcome, phase, action, detail=""):
        started = self.clock()
        value = action()
        seconds = self.clock() - started
        outcome.phases[phase] = round(seconds, 3)
        self._say(outcome.name, phase, seconds, detail(value) if callable(detail) else detail)
        return value

    def would_empty_pool(self, name, stats) -> bool:
        """True when ``name`` is UP and no other server of the pool is: taking it out empties the pool.

        A pool with nothing UP (a first deploy, say) has no availability left to protect.
        """
        pool = [s for s in stats if s.pool == self.pool]
        return any(s.server == name and s.is_up for s in pool) and not any(s.server != name and s.is_up for s in pool)

    # -- preflight -------------------------------------------------------
    def preflight(self, artifact: Artifact | None, force: bool) -> dict:
        """Read every target's facts and the pool; refuse before touching anything."""
        facts = {}
        for instance in self.instances:
            try:
                facts[instance.name] = instance.facts()
            except (CommandFailed, TransportError) as exc:
                raise DeployError(f"{instance.name}: not reachable: {exc}") from None
            machine = facts[instance.name]["machine"]
            if artifact and artifact.elf_machine is not None:
                expected = ELF_MACHINES.get(artifact.elf_machine, ())
                if machine not in expected:
                    raise DeployError(
                        f"--binary {artifact.path}: built for ELF machine {artifact.elf_machine} "
                        f"({'/'.join(expected) or 'unknown'}) but {instance.name} is {machine}; build for {machine}"
                    )
        try:
            stats = self.runtime.show_stat()
        except Exception as exc:  # the runtime API's own errors name the socket
            raise DeployError(f"HAProxy runtime API does not answer: {exc}") from None
        in_pool = {s.server for s in stats if s.pool == self.pool}
        for instance in self.instances:
            if instance.name not in in_pool:
                raise DeployError(f"{instance.name} is not a server of HAProxy's {self.pool}; run inv haproxy.setup")
        first = next((i for i in self.instances if artifact is None or facts[i.name]["sha256"] != artifact.sha256), None)
        if first is not None and not force and self.would_empty_pool(first.name, stats):
            raise DeployError(
                f"taking {first.name} out would leave no server UP in {self.pool}; "
                "bring another instance up first or pass --force"
            )
        return facts

    # -- per instance ----------------------------------------------------
    def _take_out(self, instance, outcome, force):
        if not force and self.would_empty_pool(instance.name, self.runtime.show_stat()):
            raise DeployError(f"{instance.name}: no other server of {self.pool} is UP; stopping before taking it out")
        self.runtime.set_state(self.pool, instance.name, "drain")

        def sessions():
            return self.runtime.server(self.pool, instance.name).current_sessions

        started = self.clock()
        try:
            waited = self._wait(sessions, lambda n: n == 0, self.timeouts.drain, f"{instance.name} sessions to drain")
            note = f"sessions 0 after {waited.elapsed:.2f}s"
        except WaitTimeout as exc:
            note = f"drain timeout, going on: {exc}"
        self.runtime.set_state(self.pool, instance.name, "maint")
        outcome.phases["drain"] = round(self.clock() - started, 3)
        self._say(instance.name, "drain", outcome.phases["drain"], note + "; maint")

    def _bring_back(self, instance, outcome):
        """Restart, gate on the instance's own health, then on HAProxy seeing it UP."""
        self._timed(outcome, "restart", instance.restart)

        def health_detail(waited):
            try:
                version = json.loads(waited.value[1]).get("version", "?")
            except ValueError:
                version = "?"
            return f"{waited.value[0]} version={version}"

        self._timed(outcome, "health", lambda: self._wait(
            instance.health, lambda v: v[0] == "200", self.timeouts.health,
            f"{instance.name} {instance.settings.health_path} to answer 200"), health_detail)
        self.runtime.set_state(self.pool, instance.name, "ready")
        self._timed(outcome, "haproxy", lambda: self._wait(
            lambda: self.runtime.server(self.pool, instance.name), lambda s: s.is_up, self.timeouts.haproxy_up,
            f"HAProxy to report {self.pool}/{instance.name} UP"), lambda w: w.value.status)

    def _recover(self, instance, outcome, error, restore):
        """After a failure on an instance: put the previous binary back through the same gates."""
        self._say(instance.name, "FAILED", 0, str(error))
        outcome.detail = str(error)
        try:
            restore()
            self._bring_back(instance, outcome)
            outcome.status = "rolled-back"
            self._say(instance.name, "rolled-back", 0, "previous binary is live and UP again")
        except Exception as exc:  # report whatever broke the recovery, with the instance's name
            outcome.status = "failed"
            outcome.detail += f"; recovery failed too: {exc}"
            self._say(instance.name, "FAILED", 0, f"recovery failed: {exc}")

    def _give_back(self, instance, outcome, error, taken_out):
        """A failure before the binary was touched: put the server back in service, restart nothing."""
        outcome.status = "failed"
        outcome.detail = str(error)
        self._say(instance.name, "FAILED", 0, str(error))
        if taken_out:
            self.runtime.set_state(self.pool, instance.name, "ready")

    def run(self, artifact: Artifact | None, facts: dict, force: bool = False) -> list:
        """Deploy ``artifact`` (or, when None, swap back to .prev) on each instance in order."""
        for index, instance in enumerate(self.instances):
            started = self.clock()
            outcome = InstanceOutcome(instance.name, "changed")
            self.outcomes.append(outcome)
            current = facts[instance.name]
            if artifact is not None and current["sha256"] == artifact.sha256:
                outcome.status = "ok"
                self._say(instance.name, "ok", 0, f"already runs sha256 {artifact.sha256[:12]}; nothing restarted")
                continue
            if artifact is None and current["prev_sha256"] == "none":
                outcome.status = "ok"
                self._say(instance.name, "ok", 0, "no previous binary to roll back to")
                continue
            taken_out = swapped = False
            try:
                self._take_out(instance, outcome, force)
                taken_out = True
                if artifact is not None:
                    self._timed(outcome, "push", lambda: instance.push(artifact),
                                f"{artifact.size / 1e6:.1f} MB, sha256 {artifact.sha256[:12]} verified")
                else:
                    self._timed(outcome, "swap", instance.swap_with_prev, "previous binary is live")
                swapped = True
                self._bring_back(instance, outcome)
            except (DeployError, WaitTimeout, CommandFailed, TransportError) as exc:
                if swapped:
                    restore = instance.restore_prev if artifact is not None else instance.swap_with_prev
                    if artifact is not None and current["sha256"] == "none":
                        restore = lambda: None  # first deploy: there is nothing to go back to
                    self._recover(instance, outcome, exc, restore)
                else:
                    self._give_back(instance, outcome, exc, taken_out)
                for later in self.instances[index + 1:]:
                    self.outcomes.append(InstanceOutcome(later.name, "untouched"))
                break
            finally:
                outcome.seconds = round(self.clock() - started, 3)
        return self.outcomes

    @property
    def failed(self) -> bool:
        return any(o.status in ("rolled-back", "failed") for o in self.outcomes)

    def report(self, artifact: Artifact | None) -> dict:
        return {
            "pool": self.pool,
            "artifact": asdict(artifact) if artifact else None,
            "failed": self.failed,
            "instances": [asdict(o) for o in self.outcomes],
        }
