"""The Incus host a drill takes out: struck at t0, brought back, and remembered while it is out, so the
drill's wind-down brings it back whatever ended the run (a failed step, an exception, Ctrl-C, SIGTERM
raised as one)."""

from __future__ import annotations

import time

from .engine import StepFailed, wait_for


class StruckHost:
    """One host of ``test.host-failover``.

    ``name``: the host; ``stopper``: ``stop()``, ``start()``, ``describe(action)`` (``stoppers.py``);
    ``probe()`` -> (bool, detail): the host and every instance on it running; ``undo_leftovers()`` ->
    [what it did]: bring back a host an earlier, killed drill left out; ``marks``: the drill's ``Timeline``
    (this object sets ``t0``, ``strike_returned``, ``start_issued`` and ``host_back``); ``return_timeout``:
    seconds for the host and its instances to run again."""

    def __init__(self, name: str, stopper, probe, marks, return_timeout: float, *, undo_leftovers=list,
                 clock=time.monotonic, sleep=time.sleep):
        self.name, self.stopper, self.probe, self.marks = name, stopper, probe, marks
        self.return_timeout, self.undo_leftovers = return_timeout, undo_leftovers
        self.clock, self.sleep = clock, sleep
        self.detail = ""  # what the probe said last
        self.struck = False
        self.restored = False

    @property
    def out(self) -> bool:
        """Struck and not yet started again: the wind-down must bring it back."""
        return self.struck and not self.restored

    def ready(self) -> bool:
        ready, self.detail = self.probe()
        return ready

    def converge(self, output) -> None:
        """Bring back a host an earlier drill, killed mid-way, left out (and wait until it runs)."""
        undone = self.undo_leftovers()
        if undone:
            output.line(f"an earlier drill left {self.name} out: {'; '.join(undone)}")
            self._wait_back()

    def strike(self):
        """Take the host out; t0 is when the strike was issued. A step action: (detail, data)."""
        self.marks["t0"] = self.clock()
        self.struck = True  # set first: a strike that fails half-way (or Ctrl-C) may have taken effect
        self.stopper.stop()
        self.marks["strike_returned"] = self.clock()
        seconds = self.marks["strike_returned"] - self.marks["t0"]
        return f"{self.stopper.describe('stop')} (returned after {seconds:.2f}s)", {"command_seconds": round(seconds, 3)}

    def bring_back(self) -> float:
        """Start / resume / reconnect the host and wait until it and its instances run: the clock time it
        did. Raises ``StepFailed`` when it is not back within ``return_timeout``."""
        self.marks["start_issued"] = self.clock()
        self.stopper.start()
        self.restored = True
        back = self.marks["host_back"] = self._wait_back()
        if back is None:
            raise StepFailed(f"{self.stopper.describe('start')}; not back within {self.return_timeout:g}s: {self.detail}")
        return back

    def _wait_back(self):
        return wait_for(self.ready, self.return_timeout, interval=0.5, clock=self.clock, sleep=self.sleep)
