"""Rolling binary deploy and rollback for a binary_service, in batches (default: one instance).

Orchestration only: what runs where and in which order. A ``Rollout`` is made of named collaborators,
each owning its own state:

- ``RolloutControl`` (``control.py``): the failure count, the stop it triggers at ``max_fail``, the
  operator's interrupts, each worker's flags, and their lock;
- ``BatchScheduler`` (``scheduler.py``): which instances go out together and when, within the
  ``CapacityFloor`` (at least ``min_up`` servers of the pool UP in HAProxy's view, unless --force),
  pipelining the next batch into the previous one's soak when the floor holds with the soaking
  instances counted as down;
- ``InstanceRun`` (``instance_run.py``), one per instance: drain, maint, install the staged binary
  (keeping ``.prev``) or swap back, then ``Gates`` (``gates.py``): restart, identity, health, ready,
  soak, HAProxy UP. A failure after the swap puts ``.prev`` back through the same gates;
- ``Staging`` (``staging.py``): the uploads ahead of each instance's turn;
- ``RolloutContext`` (``context.py``): what they share (runtime API, pool, floor, output, timeouts,
  clock, audit, control).

Once ``max_fail`` instances failed the rollout stops, the batches under way go back to their previous
binary and later instances stay untouched. The runtime is used only through ``show_stat``, ``server``
and ``set_state`` (and ``answering`` when it has one), so a ``BalancerSet`` over several balancers fits:
a balancer whose runtime API stops answering mid-instance is a failure like any other, the instance goes
back to its previous binary through the balancers that still answer, and the rollout stops.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from ..capacity import CapacityFloor
from ..haproxy_state import PoolView
from ..polling import WaitTimeout
from ..transports import CommandFailed, TransportError
from ..values import InvalidValue, count_or_percent, integer
from .artifact import ELF_MACHINES, Artifact, DeployError
from .context import RolloutContext
from .control import RolloutControl
from .instance import Instance, InstanceOutcome, Timeouts
from .scheduler import BatchScheduler
from .staging import Staging

PREFLIGHT_FORKS = 10  # targets whose facts are read at once, as setup's default --forks

__all__ = ["Batching", "Instance", "InstanceOutcome", "Rollout", "Timeouts", "batching"]


@dataclass
class Batching:
    """How a rollout goes through a pool: ``batch`` out at once at most, within ``floor``, stop after
    ``max_fail`` failed instances. Built from user input by ``batching``."""

    batch: int
    floor: CapacityFloor
    max_fail: int = 1


def batching(batch, floor: CapacityFloor, max_fail, targets: int) -> Batching:
    """Check ``--batch`` (N or P% of the targets) and ``--max-fail`` against the pool's floor before
    anything is touched; a floor no batch can satisfy is refused too (``InvalidValue``: exit 2)."""
    # A count above the targets is the whole lot (``--limit`` often leaves fewer than the batch).
    size = count_or_percent("--batch", batch, max(targets, 1), high=None)
    if floor.out_at_once < 1:
        raise InvalidValue(f"deploy_min_up: {floor.min_up} keeps all {floor.size} servers of the pool UP, so no "
                           f"batch can go out; lower it to at most {floor.size - 1}")
    fails = integer("--max-fail", max_fail, 1)
    return Batching(batch=min(size, floor.out_at_once), floor=floor, max_fail=fails)


class Rollout:
    """Drives instances through the gates, talking to HAProxy's runtime API.

    ``audit(event, instance=None, **fields)`` is called for every event (drained, maint, pushed,
    restarted, ready, rolled-back...); ``floor`` defaults to one server UP in a pool of the targets.
    """

    def __init__(self, instances, runtime, pool: str, output, timeouts: Timeouts | None = None,
                 clock=time.monotonic, sleep=time.sleep, audit=None, batch: int = 1,
                 floor: CapacityFloor | None = None, max_fail: int = 1):
        self.instances = instances
        self.batch = batch  # instances taken out together at most
        self.control = RolloutControl(max_fail)
        self.context = RolloutContext(
            runtime=runtime, pool=pool, floor=floor or CapacityFloor(pool, len(instances), 1), output=output,
            timeouts=timeouts or Timeouts(), clock=clock, sleep=sleep,
            audit=audit or (lambda event, instance=None, **fields: None), control=self.control)
        self.outcomes = []
        self.pool_states = {}

    @property
    def runtime(self):
        return self.context.runtime

    @property
    def output(self):
        return self.context.output

    @property
    def timeouts(self):
        return self.context.timeouts

    @property
    def abandoned(self) -> bool:
        return self.control.abandoned

    # -- preflight -------------------------------------------------------
    def settled_view(self, ignore=()) -> PoolView:
        """The pool once no server of it (but the ``ignore``d: a soaking batch, counted as down anyway) is in
        a transitional state (bounded by ``settle``)."""
        ctx = self.context

        def probe():
            return PoolView.read(ctx.runtime, ctx.pool)

        try:  # a balancer that keeps failing is not a state that settles: no waiting the whole settle for it
            return ctx.wait(probe, lambda view: view.settled(ignore), ctx.timeouts.settle,
                            f"{ctx.pool} states to settle", runtime_probe=True).value
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
        ctx = self.context

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
            view = self.settled_view()
        except Exception as exc:  # the runtime API's own errors name the socket
            raise DeployError(f"HAProxy runtime API does not answer: {exc}") from None
        self.pool_states = view.statuses()
        for instance in self.instances:
            if instance.name not in self.pool_states:
                raise DeployError(f"{instance.name} is not a server of HAProxy's {ctx.pool}; run inv haproxy.setup")
        first = next((i for i in self.instances if self.needs_work(i.name, facts, artifact)), None)
        if first is not None and not force and ctx.floor.would_break(first.name, view.up):
            raise DeployError(
                f"taking {first.name} out would leave {ctx.floor.describe()} UP in {ctx.pool}; "
                "bring another instance up first, lower deploy_min_up, or pass --force"
            )
        return facts

    # -- the run -----------------------------------------------------------
    def run(self, artifact: Artifact | None, facts: dict, force: bool = False) -> list:
        """Deploy ``artifact`` (or, when None, swap back to .prev) batch by batch, in inventory order; an
        interrupt is raised again once every instance under way is safe."""
        ctx = self.context
        queue = []
        for instance in self.instances:
            if self.needs_work(instance.name, facts, artifact):
                queue.append(instance)
                continue
            self.outcomes.append(InstanceOutcome(instance.name, "ok", state="ready (UP)"))
            if artifact is not None:
                ctx.say(instance.name, "ok", 0, f"already runs sha256 {artifact.sha256[:12]}; nothing restarted")
            else:
                ctx.say(instance.name, "ok", 0, "no previous binary to roll back to")
        if artifact is not None:
            ctx.staging = Staging([i for i in queue if facts[i.name]["sha256"] != artifact.sha256], artifact,
                                  workers=self.batch)
        try:
            BatchScheduler(ctx, self.instances, self.outcomes, self.batch, self.settled_view).run(
                queue, artifact, facts, force)
        finally:
            if ctx.staging is not None:
                ctx.staging.close()
            self._untouched_rest()
        if self.control.interrupt is not None:
            raise self.control.interrupt
        return self.outcomes

    def _untouched_rest(self):
        """Every instance without an outcome is untouched; outcomes in inventory order."""
        seen = {o.name for o in self.outcomes}
        for instance in self.instances:
            if instance.name not in seen:
                self.outcomes.append(InstanceOutcome(instance.name, "untouched", state="as before"))
        order = {instance.name: index for index, instance in enumerate(self.instances)}
        self.outcomes.sort(key=lambda o: order.get(o.name, len(order)))

    # -- results -------------------------------------------------------------
    def state_lines(self) -> list:
        """One line per instance: its outcome and where it was left (HAProxy's view when it answers)."""
        try:
            live = PoolView.read(self.runtime, self.context.pool).statuses()
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
            "pool": self.context.pool,
            "artifact": asdict(artifact) if artifact else None,
            "failed": self.failed,
            "abandoned": self.abandoned,
            "instances": [asdict(o) for o in self.outcomes],
        }
