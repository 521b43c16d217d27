"""Fakes the unit tests share."""


class Clock:
    """A monotonic clock that moves only when someone sleeps: a test's time costs no wall time."""

    def __init__(self, start: float = 100.0):
        self.now = start

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
