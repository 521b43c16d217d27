"""Rolling binary deploy and rollback for a binary_service, in batches (default: one instance).

Orchestration only: what runs where and in which order. The per-instance
sequence is: drain in HAProxy (bounded wait for sessions to end), maint, push to
a temporary name, verify its sha256 on the host, keep the current binary as
``<name>.prev``, atomic rename, restart, health gate on the instance itself,
ready in HAProxy, wait for UP. A failure after the swap puts ``.prev`` back
through the same gates. Once ``max_fail`` instances failed the rollout stops, the
stopping batch goes back to its previous binary and later instances stay untouched.

A batch runs the sequence for its instances at once (one thread each, whole output
lines). Before each batch, HAProxy's view decides how many may go out: at least
``min_up`` servers of the pool stay UP (the capacity floor; unless --force). Pipelined soak: once
every instance of a batch soaks, the next batch may go out if the floor still holds with the soaking
instances counted as down too (a pool of two never overlaps); a crash in the soak that reaches
``max_fail`` stops both batches (each instance back to its previous binary, or to ready if it was
not swapped yet).
The runtime is used only through ``show_stat``, ``server`` and ``set_state`` (and
``answering`` when it has one), so a composite over several balancers
fits. A balancer whose runtime API stops answering mid-instance is a failure like any other:
the instance goes back to its previous binary through the balancers that still answer, and
the rollout stops.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from ..placement import would_empty_host
from ..polling import WaitTimeout, wait_until
from ..transports import CommandFailed, TransportError
from .artifact import ELF_MACHINES, Artifact, DeployError
from .batches import Batching, BatchRunner, batching
from .gates import InstanceGates
from .instance import Instance, InstanceOutcome, Timeouts

PREFLIGHT_FORKS = 10  # targets whose facts are read at once, as setup's default --forks

__all__ = ["Batching", "Instance", "InstanceOutcome", "Rollout", "Timeouts", "batching"]


class Rollout(InstanceGates, BatchRunner):
    """Drives instances through the gates, talking to HAProxy's runtime API.

    ``audit(event, instance=None, **fields)`` is called for every event (drained, maint,
    pushed, restarted, ready, rolled-back...); ``finish_hint`` is the command that
    finishes the job when a second interrupt stops the run at once.
    """

    def __init__(self, instances, runtime, pool: str, output, timeouts: Timeouts | None = None,
                 clock=time.monotonic, sleep=time.sleep, audit=None, finish_hint: str = "",
                 batch: int = 1, min_up: int = 1, max_fail: int = 1):
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
        self.batch = batch  # instances taken out together at most
        self.min_up = min_up  # servers of the pool that must stay UP in HAProxy (the capacity floor)
        self.max_fail = max_fail  # the rollout stops once this many instances have failed
        self.per_host_floor = None  # (server -> host, deploy_min_up_per_host) from placement.py, when set

    # -- helpers ---------------------------------------------------------
    def _say(self, name, phase, seconds, detail=""):
        self.output.line(f"{name:<16} {phase:<11} {seconds:6.2f}s  {detail}".rstrip())

    def _nap(self, seconds):
        self._checkpoint()
        self.sleep(seconds)

    def _wait(self, probe, done, timeout, what, runtime_probe=False):
        """``wait_until`` on the rollout's clock. A ``runtime_probe`` (HAProxy's runtime API) failing for
        ``runtime_grace`` seconds in a row ends the wait: that balancer is gone, not restarting."""
        grace = self.timeouts.runtime_grace if runtime_probe else None
        return wait_until(probe, timeout=timeout, interval=self.timeouts.interval, done=done, what=what,
                          clock=self.clock, sleep=self._nap, error_grace=grace)

    def _answering(self):
        """The balancers that answer now: the ones a recovery can still put the instance back through."""
        answering = getattr(self.runtime, "answering", None)
        return answering() if answering else self.runtime

    def _timed(self, outcome, phase, action, detail=""):
        self._checkpoint()
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

    def would_break_floor(self, name, stats) -> bool:
        """True when ``name`` is UP and taking it out leaves fewer than ``min_up`` servers of the pool UP.

        A server that is not UP costs nothing: a pool with nothing UP (a first deploy, say) has no
        availability left to protect.
        """
        pool = [s for s in stats if s.pool == self.pool]
        up = sum(s.is_up for s in pool)
        if self.per_host_floor is not None:  # deploy_min_up_per_host: no host's servers all out at once
            hosts, floor = self.per_host_floor
            if would_empty_host(name, {s.server for s in pool if s.is_up}, hosts, floor):
                return True
        return any(s.server == name and s.is_up for s in pool) and up - 1 < self.min_up

    @staticmethod
    def transitional(status: str) -> bool:
        """"UP 1/3", "DOWN 1/2", slowstart ("UP 50%")...: a state HAProxy is still moving out of."""
        return status.startswith(("UP ", "DOWN ", "NOLB ")) or status == "NOLB"

    # -- preflight -------------------------------------------------------
    def _settled_stats(self, ignore=()):
        """``show stat`` once no server of the pool (but the ``ignore``d: a soaking batch, counted as down
        anyway) is in a transitional state (bounded by ``settle``)."""
        def probe():
            return [s for s in self.runtime.show_stat()]

        def settled(stats):
            return not any(self.transitional(s.status) for s in stats if s.pool == self.pool and s.server not in ignore)

        try:  # a balancer that keeps failing is not a state that settles: no waiting the whole settle for it
            return self._wait(probe, settled, self.timeouts.settle, f"{self.pool} states to settle",
                              runtime_probe=True).value
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
        """Read every target's facts (all at once) and the pool; refuse before touching anything."""
        from concurrent.futures import ThreadPoolExecutor

        def read(instance):
            try:
                return instance.facts()
            except (CommandFailed, TransportError) as exc:
                raise DeployError(f"{instance.name}: not reachable: {exc}") from None

        with ThreadPoolExecutor(max_workers=min(PREFLIGHT_FORKS, len(self.instances) or 1)) as pool:
            read_all = [pool.submit(read, instance) for instance in self.instances]
        facts = {instance.name: future.result() for instance, future in zip(self.instances, read_all)}
        for instance in self.instances:  # the first unreachable or mismatched one, in inventory order
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
        if first is not None and not force and self.would_break_floor(first.name, stats):
            floor = "no server" if self.min_up <= 1 else f"fewer than {self.min_up} servers"
            raise DeployError(
                f"taking {first.name} out would leave {floor} UP in {self.pool}; "
                "bring another instance up first, lower deploy_min_up, or pass --force"
            )
        return facts

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
