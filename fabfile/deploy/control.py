"""What stops a rollout, owned in one place: the max-fail count, the stop it triggers, the operator's
interrupts, and each worker's own flags. Every lock and thread-local is created in ``__init__``.

The main thread records interrupts (``interrupted``); workers count failures (``count_failure``) and
ask ``checkpoint()`` between steps, which raises in the worker what the rollout decided:

- a first interrupt: ``KeyboardInterrupt`` once per worker (it makes its instance safe);
- a second one: ``KeyboardInterrupt`` once more (stop making safe, leave it as it is);
- a stop (``max_fail`` instances failed): ``Stopped`` once, never in a worker already putting its
  instance back (``recovering``).
"""

from __future__ import annotations

import threading

from .artifact import DeployError


class Stopped(DeployError):
    """Raised in a worker once the rollout stops (max-fail reached): its instance goes back as on a failure,
    and does not count as one more failed instance."""


class RolloutControl:
    def __init__(self, max_fail: int = 1):
        self.max_fail = max_fail  # the rollout stops once this many instances have failed
        self.failures = 0
        self.stop_reason = None  # why the rollout stops; workers take it at their next checkpoint
        self.interrupt = None  # the KeyboardInterrupt the main thread received while a batch ran
        self.abandon = False  # a second interrupt: stop at once
        self.abandoned = False  # a worker left its instance as it was (second interrupt while making it safe)
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- decisions --------------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def may_launch(self) -> bool:
        """Whether a new batch may start now: no stop decided and no interrupt received."""
        with self._lock:
            return self.stop_reason is None and self.interrupt is None

    def count_failure(self, name: str) -> None:
        """``name`` failed (not merely stopped): once ``max_fail`` instances have, every batch under way stops."""
        with self._lock:
            self.failures += 1
            if self.failures >= self.max_fail and self.stop_reason is None:
                self.stop_reason = f"{name} failed ({self.failures} failed instance(s), max-fail {self.max_fail})"

    def interrupted(self, exc: KeyboardInterrupt) -> None:
        """The main thread got an interrupt: the first makes every instance safe, a second stops at once."""
        with self._lock:
            if self.interrupt is None:
                self.interrupt = exc
            else:
                self.abandon = True

    def worker_interrupted(self, exc: KeyboardInterrupt) -> None:
        """A worker's transport raised the interrupt: the other workers make theirs safe too."""
        with self._lock:
            if self.interrupt is None:
                self.interrupt = exc

    # -- in a worker --------------------------------------------------------------------------------------
    def start_worker(self) -> None:
        """A worker begins an instance: its flags start clean."""
        self._local.flags = set()

    def _flags(self) -> set:
        if not hasattr(self._local, "flags"):
            self._local.flags = set()
        return self._local.flags

    def recovering(self) -> None:
        """This worker is putting its instance back: a stop of the rollout no longer interrupts it."""
        self._flags().add("recovering")

    def checkpoint(self) -> None:
        """In a worker thread: raise what the rollout decided since (see the module docstring)."""
        if threading.current_thread() is threading.main_thread():
            return
        flags = self._flags()
        if self.abandon and "abandoned" not in flags:
            flags.add("abandoned")
            raise KeyboardInterrupt(str(self.interrupt or "SIGINT"))
        if self.interrupt is not None and "interrupted" not in flags:
            flags.add("interrupted")
            raise KeyboardInterrupt(str(self.interrupt or "SIGINT"))
        if self.stop_reason is not None and "recovering" not in flags:
            flags.add("recovering")
            raise Stopped(f"stopped: {self.stop_reason}")
