"""Rollouts in batches within the capacity floor, and the pure ``batching`` check of the user's input.
``BatchRunner`` is a mixin of ``Rollout``."""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait as wait_all
from dataclasses import dataclass

from ..haproxy_runtime import RuntimeAPIError
from ..placement import would_empty_host
from ..values import InvalidValue, count_or_percent, integer
from .artifact import Artifact, DeployError
from .gates import Stopped
from .instance import InstanceOutcome


@dataclass
class Batching:
    """How a rollout goes through a pool: ``batch`` out at once at most, ``min_up`` UP at least,
    stop after ``max_fail`` failed instances. Built from user input by ``batching``."""

    batch: int = 1
    min_up: int = 1
    max_fail: int = 1


def batching(batch, min_up, max_fail, targets: int, pool_size: int) -> Batching:
    """Check ``--batch`` (N or P% of the targets), ``deploy_min_up`` (N or P% of the pool) and
    ``--max-fail`` before anything is touched; a floor no batch can satisfy is refused too
    (``InvalidValue``: one error line, exit 2)."""
    # A count above the targets is the whole lot (``--limit`` often leaves fewer than the batch).
    size = count_or_percent("--batch", batch, max(targets, 1), high=None)
    floor = count_or_percent("deploy_min_up", min_up, pool_size, low=0)
    if pool_size - floor < 1:
        raise InvalidValue(f"deploy_min_up: {min_up} keeps all {pool_size} servers of the pool UP, so no batch can "
                           f"go out; lower it to at most {pool_size - 1}")
    fails = integer("--max-fail", max_fail, 1)
    return Batching(batch=min(size, pool_size - floor), min_up=floor, max_fail=fails)


INTERRUPT_POLL = 0.2  # seconds between wake-ups of the main thread while workers run


class Staging:
    """The artifact uploaded and verified on each instance ahead of its turn, ``workers`` at a time in
    rollout order (a batch's size: the next batch is staged while the current one goes through its
    gates). Nothing is taken out of rotation for it; ``close`` removes what did not go live."""

    def __init__(self, instances, artifact, workers: int):
        self.instances = list(instances)
        self.installed = set()  # names whose staged binary went live
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(self.instances) or 1)),
                                       thread_name_prefix="stage")
        self.futures = {i.name: self.pool.submit(self._stage, i, artifact) for i in self.instances}

    @staticmethod
    def _stage(instance, artifact) -> float:
        started = time.monotonic()
        instance.stage(artifact)
        return time.monotonic() - started

    def wait(self, instance) -> float:
        """Seconds its upload and check took, once done; raises what they raised."""
        future = self.futures[instance.name]
        while not future.done():  # timed, as the batch wait: an interrupt is taken at once
            wait_all([future], timeout=INTERRUPT_POLL)
        return future.result()

    def close(self) -> None:
        """Uploads not started are cancelled; staged files of instances the rollout did not reach go."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        for instance in self.instances:
            future = self.futures[instance.name]
            if instance.name not in self.installed and not future.cancelled():
                try:
                    instance.discard_staged()
                except Exception:  # noqa: BLE001 - the next run's discard_leftovers removes it
                    pass


def pick_batch(queue, up_now, batch: int, min_up: int, at_risk=(), per_host=None) -> list:
    """The first instances of ``queue`` (names, in order) that may go out together, at most ``batch``.

    Every UP server taken out costs one of the ``len(up_now) - min_up`` spare ones; a server that is not
    UP costs nothing. ``at_risk`` (a batch still soaking) counts as out already: with it, the pick is the
    whole next batch or nothing, so a batch starts while another soaks only when the floor would still
    hold if every soaking instance went down as well. ``per_host`` (server -> host, floor), from
    ``deploy_min_up_per_host``, keeps that many UP on each host too."""
    at_risk = set(at_risk)
    spare = len(set(up_now) - at_risk) - min_up
    chosen = []
    for name in queue[:batch]:
        if name in up_now:
            if spare <= 0:
                break
            if per_host is not None and would_empty_host(name, set(up_now) - at_risk - set(chosen), *per_host):
                break
            spare -= 1
        chosen.append(name)
    if at_risk and len(chosen) < len(queue[:batch]):
        return []
    return chosen


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


class BatchRunner:
    """Mixin of Rollout: batches of instances, each through ``InstanceGates._one``; the next batch may
    start while the previous one soaks (pipelined soak) when the floor allows it."""

    def run(self, artifact: Artifact | None, facts: dict, force: bool = False) -> list:
        """Deploy ``artifact`` (or, when None, swap back to .prev) batch by batch, in inventory order.

        A batch is at most ``batch`` instances, fewer when HAProxy's view says taking more out would
        leave fewer than ``min_up`` servers UP. Its instances go through the per-instance sequence
        at once (one thread each). Once every instance of a batch soaks, the next batch may start
        if the floor holds with the soaking instances counted as down (``pick_batch``; never with
        --force): at most one batch soaks while the next one is out. The rollout stops once
        ``max_fail`` instances have failed: the batches under way go back to their previous binary
        (those not yet swapped back to ready), so the pool is left on at most the two versions it had
        when the soaking batch started. The last batch's soak is waited for before the end.
        """
        self._order = {instance.name: index for index, instance in enumerate(self.instances)}
        queue = []
        flights = []  # at most two: the older soaking, the newer on its way
        pool = ThreadPoolExecutor(max_workers=2 * max(1, self.batch), thread_name_prefix="rollout")
        try:
            for instance in self.instances:
                if self.needs_work(instance.name, facts, artifact):
                    queue.append(instance)
                    continue
                self.outcomes.append(InstanceOutcome(instance.name, "ok", state="ready (UP)"))
                if artifact is not None:
                    self._say(instance.name, "ok", 0, f"already runs sha256 {artifact.sha256[:12]}; nothing restarted")
                else:
                    self._say(instance.name, "ok", 0, "no previous binary to roll back to")
            if artifact is not None:
                self.staging = Staging([i for i in queue if facts[i.name]["sha256"] != artifact.sha256], artifact,
                                       workers=self.batch)
            while True:
                try:
                    if self._stop is None and self._interrupt is None and queue:
                        if self._launch(queue, flights, artifact, facts, force, pool):
                            continue
                    if flights and flights[0].done() and self._stop is None:
                        self._land(flights.pop(0))
                        continue  # the next batch, without overlap now, if any is left
                    if not flights:
                        break
                    # Timed waits: a SIGINT that lands just as the wait starts is taken at the next wake-up
                    # (an untimed lock wait can sleep through it until the workers are done).
                    pending = [f for flight in flights for f in flight.futures if not f.done()]
                    if pending:
                        wait_all(pending, timeout=INTERRUPT_POLL, return_when=FIRST_COMPLETED)
                    if self._stop is not None and all(flight.done() for flight in flights):
                        self._land_stopped(flights, force)
                        flights.clear()
                        break
                except KeyboardInterrupt as exc:  # first: the workers make their instances safe; second: stop
                    if not flights:
                        raise
                    if self._interrupt is None:
                        self._interrupt = exc
                    else:
                        self._abandon = True
        finally:
            pool.shutdown(wait=True)
            if self.staging is not None:
                self.staging.close()
            self._untouched_rest()
        if self._interrupt is not None:
            raise self._interrupt
        return self.outcomes

    def _launch(self, queue, flights, artifact, facts, force, pool) -> bool:
        """The next batch, started and added to ``flights``, when it may start now: nothing under way, or
        one batch all in its soak (never with --force) and the floor holding with it counted as down. A batch the floor refuses with nothing under way
        stops the rollout (``queue[0]`` failed, untouched)."""
        if len(flights) > 1 or (flights and (force or flights[0].asked or not flights[0].in_soak())):
            return False
        soaking = flights[0] if flights else None
        if soaking is not None:
            soaking.asked = True  # weighed once per batch: no 'show stat' every wake-up of a soak
        try:
            batch = self._next_batch(queue, force, at_risk=soaking.names if soaking else ())
            refusal = None if batch or soaking else (
                f"taking it out would leave fewer than {self.min_up} server(s) UP in {self.pool}")
        except RuntimeAPIError as exc:  # a balancer stopped answering between batches
            if soaking is not None:
                return False  # decided again, without overlap, once the soak is over
            refusal = f"HAProxy's view of {self.pool} is unknown ({exc})"
        if refusal:
            outcome = InstanceOutcome(queue[0].name, "failed", state="as before")
            self._give_back(queue[0], outcome, DeployError(
                f"{queue[0].name}: {refusal}; stopping before taking it out"), taken_out=False)
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
            self.output.line(f"-- batch of {len(batch)}: {', '.join(i.name for i in batch)}{during}")
        for instance in batch:
            flight.futures.append(pool.submit(self._one, instance, artifact, facts, force,
                                              soaking=lambda name=instance.name: flight.soaking.add(name)))
        return True

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
            if self._interrupt is None:
                self._interrupt = exc

    def _land_stopped(self, flights, force):
        """The rollout stops (max-fail reached): every batch under way is done; what still changed goes
        back to its previous binary, one at a time."""
        for flight in flights:
            for future in flight.futures:
                self._collect(future)
        if self._interrupt is not None:
            return
        for flight in flights:
            by_name = {o.name: o for o in self.outcomes}
            self._undo_batch(flight.batch, [by_name.get(i.name) for i in flight.batch], force)
        reached = {o.name for o in self.outcomes}
        left = sum(instance.name not in reached for instance in self.instances)
        self.output.line(f"-- stopping: {self._failures} failed instance(s) (max-fail {self.max_fail}); "
                         f"{left} left untouched")

    def _next_batch(self, queue, force, at_risk=()):
        """The next instances of ``queue`` (in order) that may go out together without breaking the floor,
        ``at_risk`` (a soaking batch) counted as down (``pick_batch``).

        Counted from HAProxy's settled view: a server that is not UP does not count against the floor.
        A pool with fewer than ``min_up`` UP servers (a first deploy) only lets non-UP servers out."""
        if force:
            return queue[:self.batch]
        stats = [s for s in self._settled_stats(ignore=at_risk) if s.pool == self.pool]
        up_now = {s.server for s in stats if s.is_up}
        names = pick_batch([i.name for i in queue], up_now, self.batch, self.min_up, at_risk,
                           getattr(self, "per_host_floor", None))
        return queue[:len(names)]

    _stop = None  # why the rollout stops (max-fail reached): workers take it at their next checkpoint
    _failures = 0

    def _count_failure(self, name):
        """``name`` failed (not merely stopped): once ``max_fail`` instances have, every batch under way stops."""
        import threading

        lock = self.__dict__.setdefault("_failures_lock", threading.Lock())
        with lock:
            self._failures += 1
            if self._failures >= self.max_fail and self._stop is None:
                self._stop = f"{name} failed ({self._failures} failed instance(s), max-fail {self.max_fail})"

    staging = None  # the uploads ahead of each instance's turn (a deploy; a rollback swaps .prev)
    _interrupt = None  # the KeyboardInterrupt the main thread received while a batch ran
    _abandon = False  # a second one: stop at once

    def _checkpoint(self):
        """In a batch's worker thread: raise the interrupt the main thread received (once), and again
        on a second one while the worker makes its instance safe; once the rollout stops, ``Stopped``
        (once, and never in a worker already putting its instance back)."""
        import threading

        if threading.current_thread() is threading.main_thread():
            return
        state = self._worker_state()
        if self._abandon and not state.get("abandoned"):
            state["abandoned"] = True
            raise KeyboardInterrupt(str(self._interrupt or "SIGINT"))
        if self._interrupt is not None and not state.get("interrupted"):
            state["interrupted"] = True
            raise KeyboardInterrupt(str(self._interrupt or "SIGINT"))
        if self._stop is not None and not state.get("recovering"):
            state["recovering"] = True
            raise Stopped(f"stopped: {self._stop}")

    def _worker_state(self) -> dict:
        import threading

        local = self.__dict__.setdefault("_local", threading.local())
        if not hasattr(local, "state"):
            local.state = {}
        return local.state

    def _undo_batch(self, batch, outcomes, force):
        """The rollout stops in this batch: its instances that did change go back to their previous
        binary through the same gates (a deploy's batch-mates of a failed instance), one at a time."""
        for instance, outcome in zip(batch, outcomes):
            if outcome is None or outcome.status != "changed" or outcome.old in ("none", ""):
                continue
            self._say(instance.name, "undo", 0, "its batch failed: back to its previous binary")
            self.outcomes.remove(outcome)
            facts = {instance.name: instance.facts()}
            undo = self._one(instance, None, facts, force)
            if undo.status == "changed":
                undo.status, undo.detail = "rolled-back", "its batch failed; previous binary live again"
                self._event("rolled-back", instance.name, to=outcome.old, outcome="rolled-back",
                            detail=undo.detail)

    def _untouched_rest(self):
        """Every instance without an outcome is untouched; outcomes in inventory order."""
        seen = {o.name for o in self.outcomes}
        for instance in self.instances:
            if instance.name not in seen:
                self.outcomes.append(InstanceOutcome(instance.name, "untouched", state="as before"))
        order = getattr(self, "_order", {})
        self.outcomes.sort(key=lambda o: order.get(o.name, len(order)))
