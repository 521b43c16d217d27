"""test.reload's sequence (fabfile/failover/reload_test.py) against fakes: reloads on every balancer in
turn, failures counted per reload window and client kind, old workers' lifetimes, the verdict; and its plot."""

import xml.etree.ElementTree as ET

from fabfile.failover.reload_plot import render_svg
from fabfile.failover.reload_test import ReloadRun, ReloadSettings, worker_lifetimes
from fakes import Clock, FakeLoad


def keepalive_resets(failing):
    """Kept-alive requests due inside one of the ``failing`` [(from, to)] windows (clock time) are reset."""
    return lambda kind, t, since_start: "reset" if kind == "keepalive" and any(a <= t < b for a, b in failing) else None


class FakeSampler:
    """A balancer whose reload replaces its worker; the old one ends ``linger`` seconds later."""

    def __init__(self, clock, linger):
        self.clock, self.linger, self.samples, self.workers, self.next_pid = clock, linger, [], {"1": None}, 2

    def reload(self):
        old = [pid for pid, ends in self.workers.items() if ends is None]
        for pid in old:
            self.workers[pid] = self.clock() + self.linger
        new = str(self.next_pid)
        self.next_pid += 1
        self.workers[new] = None
        return True, f"new worker {new}", new

    def sample(self):
        alive = [pid for pid, ends in self.workers.items() if ends is None or ends > self.clock()]
        sample = (self.clock(), "1", alive)
        self.samples.append(sample)
        return sample

    def start(self):
        self.sample()

    def stop(self):
        self.sample()


class Output:
    def __init__(self):
        self.lines = []

    def line(self, text):
        self.lines.append(text)


def make_run(linger=0.5, failing=(), drain_timeout=5.0):
    clock = Clock()
    samplers = {"haproxy": FakeSampler(clock, linger), "haproxy-2": FakeSampler(clock, linger)}

    def reloader(name):
        def run():
            result = samplers[name].reload()
            clock.sleep(0.3)
            samplers[name].sample()
            return result
        return run

    run = ReloadRun(ReloadSettings(reloads=2, interval=1.0, lead_in=1.0, drain_timeout=drain_timeout),
                    balancers=list(samplers), reloaders={name: reloader(name) for name in samplers},
                    samplers=samplers, load=FakeLoad(clock, 0.25, keepalive_resets(failing)), output=Output(), clock=clock, sleep=clock.sleep)
    return run


def test_every_balancer_reloads_in_turn_and_nothing_failed():
    result = make_run().run()
    assert result["passed"]
    assert [(r["n"], r["balancer"]) for r in result["reloads"]] == [
        (1, "haproxy"), (1, "haproxy-2"), (2, "haproxy"), (2, "haproxy-2")]
    assert all(r["requests"] > 0 and r["failed"] == 0 for r in result["reloads"])
    assert result["requests"]["by_kind"]["keepalive"]["failed"] == 0 and result["requests"]["by_kind"]["new"]["total"]
    # Each reload retired exactly the worker before it, seen gone within the linger time plus a sample.
    assert [[w["pid"] for w in r["old_workers"]] for r in result["reloads"]] == [["1"], ["1"], ["2"], ["2"]]
    assert 0 < result["old_workers"]["longest_lifetime_seconds"] <= 1.5
    assert result["old_workers"]["most_at_once"] == 1


def test_a_failure_is_counted_in_its_reload_window_and_kind():
    run = make_run(failing=[(101.5, 101.7)])  # after haproxy's first reload (at 101.0)
    result = run.run()
    assert not result["passed"]
    failed = {(r["n"], r["balancer"]): r["failed"] for r in result["reloads"]}
    assert failed[(1, "haproxy")] == 1 and sum(failed.values()) == 1
    assert result["requests"]["by_kind"]["keepalive"]["failed"] == 1
    assert result["requests"]["by_kind"]["new"]["failed"] == 0
    assert "no failed request" in [s["name"] for s in result["steps"] if not s["passed"]]


def test_an_old_worker_that_never_ends_fails_the_run():
    result = make_run(linger=1000.0, drain_timeout=2.0).run()
    assert not result["passed"]
    failing = [s for s in result["steps"] if not s["passed"]]
    assert [s["name"] for s in failing] == ["old workers ended"] and "still running" in failing[0]["detail"]
    assert any(w["still_running"] for r in result["reloads"] for w in r["old_workers"])


def test_worker_lifetimes_from_samples():
    samples = [(0.0, "1", ["10"]), (1.0, "1", ["10", "11"]), (1.5, "1", ["10", "11"]), (2.0, "1", ["11"])]
    assert worker_lifetimes(samples, [{"t": 0.9, "new_worker": "11"}]) == [
        [{"pid": "10", "last_seen_after_reload": 0.6, "still_running": False}]]


def test_the_plot_shows_requests_by_kind_workers_and_reloads():
    result = make_run().run()
    root = ET.fromstring(render_svg(result))
    svg = "{http://www.w3.org/2000/svg}"
    texts = " ".join(t.text or "" for t in root.iter(f"{svg}text"))
    assert "Reloads PASSED: 4 reloads on haproxy, haproxy-2" in texts and "haproxy-2 workers" in texts
    squares = [r for r in root.iter(f"{svg}rect") if r.get("width") == "4.0" and r.get("height") == "4.0"]
    assert len(squares) == result["requests"]["by_kind"]["keepalive"]["total"]
    assert len(list(root.iter(f"{svg}circle"))) == result["requests"]["by_kind"]["new"]["total"]
