"""wait_until with a fake clock: success, timeout with the last value, probe errors, bounds."""


import pytest


from fabfile.polling import Waited, WaitTimeout, wait_until  # noqa: E402


class FakeClock:
    """A clock that only moves when someone sleeps (or a probe spends time)."""

    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def sequence(*values):
    """A probe returning ``values`` in turn (raising the exceptions among them), then the last one."""
    remaining = list(values)

    def probe():
        value = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        if isinstance(value, Exception):
            raise value
        return value

    return probe


def test_success_returns_elapsed_and_value():
    clock = FakeClock()
    waited = wait_until(sequence(None, "", "UP"), timeout=10, interval=0.5, clock=clock, sleep=clock.sleep)
    assert waited == Waited(elapsed=1.0, value="UP")
    assert clock.sleeps == [0.5, 0.5]


def test_immediate_success_does_not_sleep():
    clock = FakeClock()
    waited = wait_until(lambda: 42, timeout=1, interval=0.1, clock=clock, sleep=clock.sleep)
    assert waited.elapsed == 0 and waited.value == 42 and clock.sleeps == []


def test_in_between_values_count_as_not_yet():
    clock = FakeClock()
    states = sequence("UP", "UP 1/3", "UP 2/3", "DOWN")
    waited = wait_until(states, done=lambda s: s == "DOWN", timeout=5, interval=1,
                        clock=clock, sleep=clock.sleep, what="backend-api-1 DOWN")
    assert waited.value == "DOWN" and waited.elapsed == 3


def test_timeout_raises_with_what_and_last_value():
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as caught:
        wait_until(sequence("UP", "UP 1/3"), done=lambda s: s == "DOWN", timeout=2, interval=0.5,
                   clock=clock, sleep=clock.sleep, what="backend-api-1 DOWN")
    error = caught.value
    assert error.last_value == "UP 1/3"
    assert "backend-api-1 DOWN" in str(error) and "2s" in str(error) and "'UP 1/3'" in str(error)
    # Probes at 0, 0.5, 1, 1.5 and one at the deadline; never sleeps past it.
    assert error.attempts == 5 and clock.now == 102.0


def test_probe_exceptions_are_not_yet_and_the_last_is_reported():
    clock = FakeClock()
    waited = wait_until(sequence(ConnectionError("refused"), ConnectionError("refused"), "ok"),
                        timeout=5, interval=1, clock=clock, sleep=clock.sleep)
    assert waited.value == "ok" and waited.elapsed == 2

    clock = FakeClock()
    with pytest.raises(WaitTimeout) as caught:
        wait_until(sequence(ValueError("first"), OSError("socket does not answer")),
                   timeout=1, interval=0.5, clock=clock, sleep=clock.sleep, what="runtime API")
    assert isinstance(caught.value.last_error, OSError)
    assert "no value seen" in str(caught.value) and "socket does not answer" in str(caught.value)


def test_bounded_in_count_when_the_clock_does_not_move():
    calls = []
    with pytest.raises(WaitTimeout) as caught:
        wait_until(lambda: calls.append(1), timeout=1, interval=0.25, clock=lambda: 0.0, sleep=lambda s: None)
    assert len(calls) == caught.value.attempts == 6  # ceil(1 / 0.25) + 2


def test_slow_probe_still_respects_the_deadline():
    clock = FakeClock()

    def slow_probe():
        clock.now += 3  # each probe takes longer than the whole timeout
        return False

    with pytest.raises(WaitTimeout) as caught:
        wait_until(slow_probe, timeout=2, interval=0.5, clock=clock, sleep=clock.sleep)
    assert caught.value.attempts == 1 and clock.sleeps == []


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        wait_until(lambda: True, timeout=1, interval=0)
    with pytest.raises(ValueError):
        wait_until(lambda: True, timeout=-1, interval=1)


def test_errors_in_a_row_for_the_grace_end_the_wait():
    clock = FakeClock()
    refused = ConnectionRefusedError("balancer gone")
    with pytest.raises(ConnectionRefusedError):
        wait_until(sequence(OSError("restarting"), 0, refused, refused, refused, refused, refused, True), timeout=30,
                   interval=0.5, clock=clock, sleep=clock.sleep, error_grace=1.0)
    assert clock.now - 100.0 == 2.0  # an answer in between restarts the count; no waiting out the 30 s
