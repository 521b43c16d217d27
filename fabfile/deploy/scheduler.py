"""Batches of a rollout within the capacity floor, pipelined: the next batch may go out while the
previous one soaks when the floor holds with the soaking instances counted as down.

``BatchScheduler`` decides which instances go out together and when (HAProxy's settled view and the
``CapacityFloor``), runs one ``InstanceRun`` per instance in a worker thread, and takes what the
``RolloutControl`` says: an interrupt makes every batch under way safe, a stop (max-fail reached)
sends every batch under way back to its previous binary.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait as wait_all

from ..haproxy_runtime import RuntimeAPIError
from .artifact import DeployError
from .control import Stopped
from .instance import InstanceOutcome
from .instance_run import InstanceRun
from .staging import INTERRUPT_POLL


class Flight:
    """A batch under way: one future per instance, and the names that reached their soak on the way forward."""

    def __init__(self, batch):
        self.batch = batch
        self.futures = []
        self.soaking = set()
        self.asked = False  # whether the next batch was already weighed against this one's soak

    @property
    def names(self):
        return [instance.name for instance in self.batch]

    def done(self) -> bool:
        return all(future.done() for future in self.futures)

    def in_soak(self) -> bool:
        """Every instance soaks (or is done): only the soak is left of this batch."""
        return all(name in self.soaking or future.done() for name, future in zip(self.names, self.futures))


class BatchScheduler:
    def __init__(self, context, instances, outcomes: list, batch: int, settled_view):
        self.ctx = context
        self.control = context.control
        self.instances = instances  # every target, inventory order (for the stop's count)
        self.outcomes = outcomes
        self.batch = batch  # instances taken out together at most
        self.settled_view = settled_view  # (ignore=()) -> PoolView once the pool's states settled
        self.flights = []  # at most two: the older soaking, the newer on its way

    def run(self, queue: list, artifact, facts: dict, force: bool) -> None:
        """Every instance of ``queue`` (in order) through its ``InstanceRun``, batch by batch.

        A batch is at most ``batch`` instances, fewer when HAProxy's view says taking more out would
        break the floor. Once every instance of a batch soaks, the next batch may start if the floor
        holds with the soaking instances counted as down (never with --force): at most one batch soaks
        while the next one is out. The last batch's soak is waited for before the end."""
        queue = list(queue)
        flights = self.flights
        pool = ThreadPoolExecutor(max_workers=2 * max(1, self.batch), thread_name_prefix="rollout")
        try:
            while True:
                try:
                    if queue and self.control.may_launch():
                        if self._launch(queue, artifact, facts, force, pool):
                            continue
                    if flights and flights[0].done() and not self.control.stopping:
                        self._land(flights.pop(0))
                        continue  # the next batch, without overlap now, if any is left
                    if not flights:
                        break
                    # Timed waits: a SIGINT that lands just as the wait starts is taken at the next wake-up
                    # (an untimed lock wait can sleep through it until the workers are done).
                    pending = [f for flight in flights for f in flight.futures if not f.done()]
                    if pending:
                        wait_all(pending, timeout=INTERRUPT_POLL, return_when=FIRST_COMPLETED)
                    if self.control.stopping and all(flight.done() for flight in flights):
                        self._land_stopped(force)
                        flights.clear()
                        break
                except KeyboardInterrupt as exc:  # first: the workers make their instances safe; second: stop
                    if not flights:
                        raise
                    self.control.interrupted(exc)
        finally:
            pool.shutdown(wait=True)

    def _launch(self, queue, artifact, facts, force, pool) -> bool:
        """The next batch, started, when it may start now: nothing under way, or one batch all in its soak
        (never with --force) and the floor holding with it counted as down. A batch the floor refuses
        with nothing under way stops the rollout (``queue[0]`` failed, untouched)."""
        flights = self.flights
        if len(flights) > 1 or (flights and (force or flights[0].asked or not flights[0].in_soak())):
            return False
        soaking = flights[0] if flights else None
        if soaking is not None:
            soaking.asked = True  # weighed once per batch: no 'show stat' every wake-up of a soak
        try:
            batch = self._next_batch(queue, force, at_risk=soaking.names if soaking else ())
            refusal = None if batch or soaking else (
                f"taking it out would leave fewer than {self.ctx.floor.min_up} server(s) UP in {self.ctx.pool}")
        except RuntimeAPIError as exc:  # a balancer stopped answering between batches
            if soaking is not None:
                return False  # decided again, without overlap, once the soak is over
            refusal = f"HAProxy's view of {self.ctx.pool} is unknown ({exc})"
        if refusal:
            outcome = InstanceOutcome(queue[0].name, "failed", state="as before")
            run = InstanceRun(self.ctx, queue[0], artifact, facts, force, self.outcomes)
            run.give_back(outcome, DeployError(f"{queue[0].name}: {refusal}; stopping before taking it out"),
                          taken_out=False)
            self.outcomes.append(outcome)
            queue.clear()
            return False
        if not batch:
            return False
        del queue[:len(batch)]
        flight = Flight(batch)
        flights.append(flight)  # before its workers start: an interrupt from here on reaches them
        if len(batch) > 1 or self.batch > 1 or soaking is not None:
            during = f" (while {', '.join(soaking.names)} soak{'s' if len(soaking.names) == 1 else ''})" if soaking else ""
            self.ctx.output.line(f"-- batch of {len(batch)}: {', '.join(i.name for i in batch)}{during}")
        for instance in batch:
            run = InstanceRun(self.ctx, instance, artifact, facts, force, self.outcomes,
                              soaking=lambda name=instance.name: flight.soaking.add(name))
            flight.futures.append(pool.submit(run.run))
        return True

    def _next_batch(self, queue, force, at_risk=()):
        """The next instances of ``queue`` (in order) that may go out together, ``at_risk`` (a soaking
        batch) counted as down. Counted from HAProxy's settled view: a server that is not UP does not
        count against the floor (a pool with fewer than ``min_up`` UP only lets non-UP servers out)."""
        if force:
            return queue[:self.batch]
        view = self.settled_view(ignore=at_risk)
        names = self.ctx.floor.pick([i.name for i in queue], view.up, self.batch, at_risk)
        return queue[:len(names)]

    def _land(self, flight):
        """A batch is done: a worker's interrupt reaches the others; a stop landed in it is taken by the loop."""
        for future in flight.futures:
            self._collect(future)

    def _collect(self, future):
        try:
            future.result()
        except Stopped:
            pass  # stopped before anything was touched: untouched
        except KeyboardInterrupt as exc:  # raised in a worker (its transport): the others make theirs safe too
            self.control.worker_interrupted(exc)

    def _land_stopped(self, force):
        """The rollout stops (max-fail reached): every batch under way is done; what still changed goes
        back to its previous binary, one at a time."""
        for flight in self.flights:
            for future in flight.futures:
                self._collect(future)
        if self.control.interrupt is not None:
            return
        for flight in self.flights:
            by_name = {o.name: o for o in self.outcomes}
            self._undo_batch(flight.batch, [by_name.get(i.name) for i in flight.batch], force)
        reached = {o.name for o in self.outcomes}
        left = sum(instance.name not in reached for instance in self.instances)
        self.ctx.output.line(f"-- stopping: {self.control.failures} failed instance(s) (max-fail "
                             f"{self.control.max_fail}); {left} left untouched")

    def _undo_batch(self, batch, outcomes, force):
        """The rollout stops in this batch: its instances that did change go back to their previous
        binary through the same gates (a deploy's batch-mates of a failed instance), one at a time."""
        for instance, outcome in zip(batch, outcomes):
            if outcome is None or outcome.status != "changed" or outcome.old in ("none", ""):
                continue
            self.ctx.say(instance.name, "undo", 0, "its batch failed: back to its previous binary")
            self.outcomes.remove(outcome)
            undo = InstanceRun(self.ctx, instance, None, {instance.name: instance.facts()}, force, self.outcomes).run()
            if undo.status == "changed":
                undo.status, undo.detail = "rolled-back", "its batch failed; previous binary live again"
                self.ctx.event("rolled-back", instance.name, to=outcome.old, outcome="rolled-back",
                               detail=undo.detail)
