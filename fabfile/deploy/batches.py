"""Rollouts in batches within the capacity floor, and the pure ``batching`` check of the user's input.
``BatchRunner`` is a mixin of ``Rollout``."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait as wait_all
from dataclasses import dataclass

from ..haproxy_runtime import RuntimeAPIError
from ..values import InvalidValue, count_or_percent, integer
from .artifact import Artifact, DeployError
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


class BatchRunner:
    """Mixin of Rollout: batches of instances, each through ``InstanceGates._one``."""

    def run(self, artifact: Artifact | None, facts: dict, force: bool = False) -> list:
        """Deploy ``artifact`` (or, when None, swap back to .prev) batch by batch, in inventory order.

        A batch is at most ``batch`` instances, fewer when HAProxy's view says taking more out would
        leave fewer than ``min_up`` servers UP. Its instances go through the per-instance sequence
        at once (one thread each). After a batch, the rollout stops once ``max_fail`` instances have
        failed; the stopping batch's instances that did succeed go back to their previous binary
        too, so the pool is left on at most the two versions it had when that batch started.
        """
        self._order = {instance.name: index for index, instance in enumerate(self.instances)}
        queue = []
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
            failures = 0
            while queue:
                try:
                    batch = self._next_batch(queue, force)
                    refusal = None if batch else (f"taking it out would leave fewer than {self.min_up} server(s) UP "
                                                  f"in {self.pool}")
                except RuntimeAPIError as exc:  # a balancer stopped answering between batches
                    refusal = f"HAProxy's view of {self.pool} is unknown ({exc})"
                if refusal:
                    outcome = InstanceOutcome(queue[0].name, "failed", state="as before")
                    self._give_back(queue[0], outcome, DeployError(
                        f"{queue[0].name}: {refusal}; stopping before taking it out"), taken_out=False)
                    self.outcomes.append(outcome)
                    break
                del queue[:len(batch)]
                if len(batch) > 1 or self.batch > 1:
                    self.output.line(f"-- batch of {len(batch)}: {', '.join(i.name for i in batch)}")
                outcomes = self._run_batch(batch, artifact, facts, force)
                failures += sum(o.status in ("rolled-back", "failed") for o in outcomes)
                if failures >= self.max_fail:
                    self._undo_batch(batch, outcomes, force)
                    self.output.line(f"-- stopping: {failures} failed instance(s) (max-fail {self.max_fail}); "
                                     f"{len(queue)} left untouched")
                    break
        finally:
            if self.staging is not None:
                self.staging.close()
            self._untouched_rest()
        return self.outcomes

    def _next_batch(self, queue, force):
        """The next instances of ``queue`` (in order) that may go out together without breaking the floor.

        Counted from HAProxy's settled view: a server that is not UP does not count against the floor.
        A pool with fewer than ``min_up`` UP servers (a first deploy) only lets non-UP servers out."""
        if force:
            return queue[:self.batch]
        stats = [s for s in self._settled_stats() if s.pool == self.pool]
        up_now = {s.server for s in stats if s.is_up}
        spare = len(up_now) - self.min_up
        chosen = []
        for instance in queue[:self.batch]:
            if instance.name in up_now:
                if spare <= 0:
                    break
                spare -= 1
            chosen.append(instance)
        return chosen

    def _run_batch(self, batch, artifact, facts, force) -> list:
        """The per-instance sequence for every instance of ``batch`` at once; their outcomes.

        A batch of one runs in this thread (as before batches existed). For more, one thread each;
        an interrupt (which only this thread receives) is passed to them through ``_interrupt`` and
        each makes its own instance safe, bounded by the same timeouts; a second one stops them."""
        if len(batch) == 1:
            return [self._one(batch[0], artifact, facts, force)]
        from concurrent.futures import wait as wait_all

        pool = ThreadPoolExecutor(max_workers=len(batch), thread_name_prefix="rollout")
        futures, waiting = [], list(batch)
        interrupt = None
        try:
            while True:
                try:
                    while waiting:
                        futures.append(pool.submit(self._one, waiting.pop(0), artifact, facts, force))
                    # Timed waits: a SIGINT that lands just as the wait starts is taken at the next wake-up
                    # (an untimed lock wait can sleep through it until the workers are done).
                    while wait_all(futures, timeout=INTERRUPT_POLL).not_done:
                        pass
                    break
                except KeyboardInterrupt as exc:  # first: the workers make their instances safe; second: stop
                    waiting.clear()  # not started: untouched
                    interrupt = interrupt or exc
                    if self._interrupt is None:
                        self._interrupt = exc
                    else:
                        self._abandon = True
        finally:
            pool.shutdown(wait=True)
        results = []
        for future in futures:
            try:
                results.append(future.result())
            except KeyboardInterrupt as exc:
                interrupt = interrupt or exc
        if interrupt is not None or self._interrupt is not None:
            raise interrupt or self._interrupt
        return results

    staging = None  # the uploads ahead of each instance's turn (a deploy; a rollback swaps .prev)
    _interrupt = None  # the KeyboardInterrupt the main thread received while a batch ran
    _abandon = False  # a second one: stop at once

    def _checkpoint(self):
        """In a batch's worker thread: raise the interrupt the main thread received (once), and again
        on a second one while the worker makes its instance safe."""
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
            if outcome.status != "changed" or outcome.old in ("none", ""):
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
