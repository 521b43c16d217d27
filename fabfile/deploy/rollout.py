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
    soak: float = 5.0  # health must stay 200 this long after ready (0 disables)
    settle: float = 10.0  # preflight waits this long for transitional pool states (UP 1/3...) to settle


@dataclass
class InstanceOutcome:
    name: str
    status: str  # ok | changed | rolled-back | failed | untouched | interrupted
    seconds: float = 0.0
    phases: dict = field(default_factory=dict)
    detail: str = ""
    state: str = ""  # where the instance was left: "ready (UP)", "MAINT", ...


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

    def running_sha256(self) -> str:
        return (self.transport.run(self.commands.running_sha256(), warn=True).stdout.strip() or "none")

    def push(self, artifact: Artifact) -> None:
        """Upload to this run's temporary name (born 0700 root-only), verify, keep .prev, rename."""
        self.transport.run(self.commands.discard_leftovers())
        self.transport.put(artifact.path, self.commands.incoming, mode="0700")
        self.transport.run(self.commands.install_incoming(artifact.sha256))

    def swap_with_prev(self) -> None:
        self.transport.run(self.commands.swap_with_prev())

    def restore_prev(self) -> None:
        self.transport.run(self.commands.restore_prev())

    def restart(self) -> None:
        self.transport.run(self.commands.restart())


class Rollout:
    """Drives instances through the gates, talking to HAProxy's runtime API.

    ``audit(event, instance=None, **fields)`` is called for every event (drained, maint,
    pushed, restarted, ready, rolled-back...); ``finish_hint`` is the command that
    finishes the job when a second interrupt stops the run at once.
    """

    def __init__(self, instances, runtime, pool: str, output, timeouts: Timeouts | None = None,
                 clock=time.monotonic, sleep=time.sleep, audit=None, finish_hint: str = ""):
        self.instances = instances
        self.runtime = runtime
        self.pool = pool
        self.output = output
        self.timeouts = timeouts or Timeouts()
        self.clock = clock
        self.sleep = sleep
        self.audit = audit or (lambda event, instance=None, **fields: None)
        self.finish_hint = finish_hint
        self.outcomes = []
        self.pool_states = {}

    # -- helpers ---------------------------------------------------------
    def _say(self, name, phase, seconds, detail=""):
        self.output.line(f"{name:<16} {phase:<11} {seconds:6.2f}s  {detail}".rstrip())

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

    def _event(self, event, instance, **fields):
        try:
            self.audit(event, instance, **fields)
        except Exception as exc:  # the audit trail never breaks a rollout; say so once per event
            self.output.line(f"warning: audit line '{event}' not written: {exc}")

    def would_empty_pool(self, name, stats) -> bool:
        """True when ``name`` is UP and no other server of the pool is: taking it out empties the pool.

        A pool with nothing UP (a first deploy, say) has no availability left to protect.
        """
        pool = [s for s in stats if s.pool == self.pool]
        return any(s.server == name and s.is_up for s in pool) and not any(s.server != name and s.is_up for s in pool)

    @staticmethod
    def transitional(status: str) -> bool:
        """"UP 1/3", "DOWN 1/2", slowstart ("UP 50%")...: a state HAProxy is still moving out of."""
        return status.startswith(("UP ", "DOWN ", "NOLB ")) or status == "NOLB"

    # -- preflight -------------------------------------------------------
    def _settled_stats(self):
        """``show stat`` once no server of the pool is in a transitional state (bounded by ``settle``)."""
        def probe():
            return [s for s in self.runtime.show_stat()]

        def settled(stats):
            return not any(self.transitional(s.status) for s in stats if s.pool == self.pool)

        try:
            return self._wait(probe, settled, self.timeouts.settle, f"{self.pool} states to settle").value
        except WaitTimeout:
            return probe()  # still moving: decide on the latest states (the per-instance check repeats it)

    def needs_work(self, instance_name, facts, artifact) -> bool:
        """Whether this instance is not yet on the target, running it, and in service."""
        f = facts[instance_name]
        if artifact is None:
            return f["prev_sha256"] != "none"
        state = self.pool_states.get(instance_name, "")
        return not (f["sha256"] == artifact.sha256 and f["running_sha256"] == artifact.sha256
                    and f["unit"] == "active" and state in ("UP", "no check"))

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
            stats = self._settled_stats()
        except Exception as exc:  # the runtime API's own errors name the socket
            raise DeployError(f"HAProxy runtime API does not answer: {exc}") from None
        self.pool_states = {s.server: s.status for s in stats if s.pool == self.pool}
        for instance in self.instances:
            if instance.name not in self.pool_states:
                raise DeployError(f"{instance.name} is not a server of HAProxy's {self.pool}; run inv haproxy.setup")
        first = next((i for i in self.instances if self.needs_work(i.name, facts, artifact)), None)
        if first is not None and not force and self.would_empty_pool(first.name, stats):
            raise DeployError(
                f"taking {first.name} out would leave no server UP in {self.pool}; "
                "bring another instance up first or pass --force"
            )
        return facts

    # -- per instance ----------------------------------------------------
    def _take_out(self, instance, outcome, force):
        stats = self._settled_stats()
        if not force and self.would_empty_pool(instance.name, stats):
            raise DeployError(f"{instance.name}: no other server of {self.pool} is UP; stopping before taking it out")
        outcome.state = "DRAIN"
        self.runtime.set_state(self.pool, instance.name, "drain")
        self._event("drained", instance.name)

        def sessions():
            return self.runtime.server(self.pool, instance.name).current_sessions

        started = self.clock()
        try:
            waited = self._wait(sessions, lambda n: not n, self.timeouts.drain, f"{instance.name} sessions to drain")
            note = f"sessions 0 after {waited.elapsed:.2f}s"
        except WaitTimeout as exc:
            note = f"drain timeout, going on: {exc}"
        self.runtime.set_state(self.pool, instance.name, "maint")
        outcome.state = "MAINT"
        outcome.phases["drain"] = round(self.clock() - started, 3)
        self._event("maint", instance.name, seconds=outcome.phases["drain"])
        self._say(instance.name, "drain", outcome.phases["drain"], note + "; maint")

    def _health_detail(self, waited):
        try:
            version = json.loads(waited.value[1]).get("version", "?")
        except (ValueError, AttributeError):
            version = "?"
        return f"{waited.value[0]} version={version}"

    def _bring_back(self, instance, outcome, expected: str | None, restart: bool = True):
        """Restart, prove the main process runs ``expected`` (identity), health 200, ready, then the soak:
        health must stay 200 (and the process the same binary) for ``soak`` seconds while HAProxy
        takes it back. A failure raises; the caller rolls back."""
        if restart:
            self._timed(outcome, "restart", instance.restart)
            self._event("restarted", instance.name, to=expected)
        if expected and expected != "none":
            self._timed(outcome, "identity", lambda: self._wait(
                instance.running_sha256, lambda sha: sha == expected, self.timeouts.health,
                f"{instance.name}'s main process to run sha256 {expected[:12]}"),
                lambda w: f"/proc/MainPID/exe sha256 {w.value[:12]}")
        self._timed(outcome, "health", lambda: self._wait(
            instance.health, lambda v: v[0] == "200", self.timeouts.health,
            f"{instance.name} {instance.settings.health_path} to answer 200"), self._health_detail)
        self.runtime.set_state(self.pool, instance.name, "ready")
        # Our gates just proved it healthy: no need to wait for `rise` checks (its checks keep running).
        self.runtime.set_health(self.pool, instance.name, "up")
        outcome.state = "ready"
        self._event("ready", instance.name, sha256=expected)
        if self.timeouts.soak > 0:
            started = self.clock()

            def soak_probe():
                code, _ = instance.health()
                if code != "200":
                    return f"health {code or 'no answer'}"
                if expected and expected != "none" and instance.running_sha256() != expected:
                    return "main process changed"
                return None

            failure = None
            while self.clock() - started < self.timeouts.soak:
                failure = soak_probe()
                if failure:
                    break
                self.sleep(self.timeouts.interval)
            outcome.phases["soak"] = round(self.clock() - started, 3)
            if failure:
                self._say(instance.name, "soak", outcome.phases["soak"], f"FAILED: {failure}")
                self._pull(instance, outcome)
                raise DeployError(f"{instance.name}: crashed inside the {self.timeouts.soak:g}s soak ({failure})")
            self._say(instance.name, "soak", outcome.phases["soak"], "health stayed 200")
        self._timed(outcome, "haproxy", lambda: self._wait(
            lambda: self.runtime.server(self.pool, instance.name), lambda s: s.is_up, self.timeouts.haproxy_up,
            f"HAProxy to report {self.pool}/{instance.name} UP"), lambda w: w.value.status)
        outcome.state = "ready (UP)"

    def _pull(self, instance, outcome):
        """Out of rotation at once (a crash in the soak): maint, no drain wait."""
        self.runtime.set_state(self.pool, instance.name, "maint")
        outcome.state = "MAINT"

    def _recover(self, instance, outcome, error, restore, expected):
        """After a failure on an instance: put the previous binary back through the same gates."""
        self._say(instance.name, "FAILED", 0, str(error))
        outcome.detail = str(error)
        try:
            restore()
            self._bring_back(instance, outcome, expected)
            outcome.status = "rolled-back"
            self._event("rolled-back", instance.name, to=expected, outcome="rolled-back", detail=str(error))
            self._say(instance.name, "rolled-back", 0, "previous binary is live and UP again")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # report whatever broke the recovery, with the instance's name
            outcome.status = "failed"
            outcome.detail += f"; recovery failed too: {exc}"
            self._event("failed", instance.name, outcome="failed", detail=outcome.detail)
            self._say(instance.name, "FAILED", 0, f"recovery failed: {exc}; left {outcome.state or 'as is'}")

    def _give_back(self, instance, outcome, error, taken_out):
        """A failure before the binary was touched: put the server back in service, restart nothing."""
        outcome.status = "failed"
        outcome.detail = str(error)
        self._say(instance.name, "FAILED", 0, str(error))
        if taken_out:
            try:
                self.runtime.set_state(self.pool, instance.name, "ready")
                outcome.state = "ready"
            except Exception as exc:
                outcome.detail += f"; could not return it to ready: {exc}"
                self._say(instance.name, "FAILED", 0, f"still {outcome.state}: {exc}")
        self._event("failed", instance.name, outcome="failed", detail=outcome.detail)

    def _make_safe(self, instance, outcome, target, old):
        """After an interrupt: finish the gates if the target is on disk, else put the old binary back
        and return the instance to ready. Bounded by the same timeouts."""
        facts = instance.facts()
        if target and facts["sha256"] == target:
            try:
                self._bring_back(instance, outcome, target, restart=facts["running_sha256"] != target)
                outcome.detail = "interrupted; finished its gates on the new binary"
                return
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                self._say(instance.name, "FAILED", 0, f"finishing after the interrupt: {exc}")
                if old and old != "none" and facts["prev_sha256"] == old:
                    instance.restore_prev()
                facts = instance.facts()
        restart = facts["running_sha256"] != facts["sha256"] or facts["unit"] != "active"
        self._bring_back(instance, outcome, facts["sha256"], restart=restart)
        outcome.detail = "interrupted; back on its previous binary"

    def run(self, artifact: Artifact | None, facts: dict, force: bool = False) -> list:
        """Deploy ``artifact`` (or, when None, swap back to .prev) on each instance in order."""
        for index, instance in enumerate(self.instances):
            started = self.clock()
            outcome = InstanceOutcome(instance.name, "changed")
            self.outcomes.append(outcome)
            current = facts[instance.name]
            if not self.needs_work(instance.name, facts, artifact):
                outcome.status, outcome.state = "ok", "ready (UP)"
                if artifact is not None:
                    self._say(instance.name, "ok", 0, f"already runs sha256 {artifact.sha256[:12]}; nothing restarted")
                else:
                    self._say(instance.name, "ok", 0, "no previous binary to roll back to")
                continue
            target = artifact.sha256 if artifact is not None else current["prev_sha256"]
            old = current["sha256"]
            on_disk = artifact is not None and current["sha256"] == artifact.sha256  # an earlier run got this far
            if on_disk:
                old = current["prev_sha256"]
            taken_out = swapped = False
            try:
                try:
                    self._take_out(instance, outcome, force)
                    taken_out = True
                    if on_disk:
                        self._say(instance.name, "converge", 0, "target binary already on disk; restart and gates")
                    elif artifact is not None:
                        self._timed(outcome, "push", lambda: instance.push(artifact),
                                    f"{artifact.size / 1e6:.1f} MB, sha256 {artifact.sha256[:12]} verified")
                        self._event("pushed", instance.name, **{"from": old, "to": target})
                    else:
                        self._timed(outcome, "swap", instance.swap_with_prev, "previous binary is live")
                        self._event("swapped", instance.name, **{"from": old, "to": target})
                    swapped = True
                    self._bring_back(instance, outcome, target)
                    self._event("done", instance.name, **{"from": old, "to": target}, outcome="changed",
                                seconds=round(self.clock() - started, 3))
                except KeyboardInterrupt as interrupt:
                    self._interrupted(instance, outcome, target, old, interrupt, index)
                    raise
                except Exception as exc:  # every failure is the rollback path
                    if swapped:
                        if artifact is None:
                            restore = instance.swap_with_prev
                        elif old == "none":
                            restore = lambda: None  # first deploy: there is nothing to go back to
                        else:
                            restore = instance.restore_prev
                        self._recover(instance, outcome, exc, restore, None if old == "none" else old)
                    else:
                        self._give_back(instance, outcome, exc, taken_out)
                    self._untouched_after(index)
                    break
            finally:
                outcome.seconds = round(self.clock() - started, 3)
        return self.outcomes

    def _untouched_after(self, index):
        for later in self.instances[index + 1:]:
            self.outcomes.append(InstanceOutcome(later.name, "untouched", state="as before"))

    def _interrupted(self, instance, outcome, target, old, interrupt, index):
        """Make the current instance safe (bounded); a second interrupt stops at once."""
        outcome.status = "interrupted"
        self._untouched_after(index)
        self._say(instance.name, "INTERRUPTED", 0, f"{interrupt or 'SIGINT'}: making it safe (interrupt again to stop at once)")
        try:
            self._make_safe(instance, outcome, target, old)
            self._event("interrupted", instance.name, outcome="made safe", detail=outcome.detail)
        except KeyboardInterrupt:
            self.abandoned = True
            outcome.detail = "second interrupt: left as it was"
            self._event("interrupted", instance.name, outcome="abandoned")
        except Exception as exc:
            outcome.detail = f"interrupted; making it safe failed: {exc}"
            self._say(instance.name, "FAILED", 0, outcome.detail)

    abandoned = False

    def state_lines(self) -> list:
        """One line per instance: its outcome and where it was left (HAProxy's view when it answers)."""
        try:
            live = {s.server: s.status for s in self.runtime.show_stat() if s.pool == self.pool}
        except Exception:
            live = {}
        lines = []
        for o in self.outcomes:
            where = live.get(o.name) or o.state or "?"
            lines.append(f"{o.name:<16} {o.status:<12} haproxy={where}  {o.detail}".rstrip())
        return lines

    @property
    def failed(self) -> bool:
        return any(o.status in ("rolled-back", "failed", "interrupted") for o in self.outcomes)

    def report(self, artifact: Artifact | None) -> dict:
        return {
            "pool": self.pool,
            "artifact": asdict(artifact) if artifact else None,
            "failed": self.failed,
            "abandoned": self.abandoned,
            "instances": [asdict(o) for o in self.outcomes],
        }
