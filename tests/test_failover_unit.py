"""test.failover against fakes: a fake lab (clock, HAProxy view, stopper, HTTP, WebSocket, exporter), no network.

The clients themselves (the load engine's facade) are tested on loopback in test_loadtest_loopback.py;
the fake WebSocket session here is a facade ``WsSession`` with only its transport faked.
"""

import io
import json
import xml.etree.ElementTree as ET

import pytest
from invoke import Context
from invoke.exceptions import Exit

from fabfile.failover.checks import (
    STEP_DOWN,
    STEP_DOWN_WINDOW,
    STEP_LOAD_FLOWING,
    STEP_LOAD_TOTAL,
    STEP_METRICS_BEFORE,
    STEP_METRICS_DOWN,
    STEP_PREFLIGHT,
    STEP_RECOVERY,
    STEP_RESTORE,
    STEP_STOP,
    STEP_WS_CLOSED,
    STEP_WS_PINNED,
    STEP_WS_REBALANCED,
    STEP_WS_STAYS,
    FailoverSettings,
)
from fabfile.failover import sequence
from fabfile.failover.sequence import FailoverTest
from fabfile.failover.stoppers import IncusStopper, make_stopper
from fabfile.haproxy_runtime import ServerStat
from fabfile.inventory import Host
from fabfile.failover.metrics import MetricSample
from fabfile.loadtest.facade import Reply, SessionClosed, WsSession, phase_counts
from fabfile.loadtest.outcomes import Sample
from fabfile.failover.plot import render_svg
from fabfile.output import Masker, Output
from fabfile.tasks.test import failover as test_tasks
from fabfile.process import Result
from fabfile.transports import IncusTransport, SshTransport

VICTIM, SURVIVOR = "backend-api-1", "backend-api-2"


class World:
    """The lab as the fakes see it: a fake clock, which backends run, and when HAProxy notices.

    HAProxy marks a stopped backend DOWN ``detect_after`` seconds after the stop
    (never, with ``never_down``), and a started one UP ``up_after`` seconds
    after the start; in between it shows the transitional states.
    """

    def __init__(self, detect_after=1.2, up_after=3.0, never_down=False, down_from_start=()):
        self.now = 1000.0
        self.running = {VICTIM: True, SURVIVOR: True}
        self.changed_at = {VICTIM: -1e9, SURVIVOR: -1e9}
        self.detect_after = detect_after
        self.up_after = up_after
        self.never_down = never_down
        self.down_from_start = set(down_from_start)  # already DOWN in HAProxy before the test
        self.events = []
        self.on_sleep = []  # callbacks(now) run as fake time passes: the "background" load

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        for callback in self.on_sleep:
            callback(self.now)

    def status(self, name):
        if name in self.down_from_start:
            return "DOWN"
        since = self.now - self.changed_at[name]
        if self.running[name]:
            return "UP" if since >= self.up_after else "DOWN 1/2"
        if self.never_down or since < self.detect_after:
            return "UP 1/3"
        return "DOWN"

    def serving(self):
        """Backends a request can land on: running ones (HAProxy retries the others)."""
        return [name for name in self.running if self.running[name] and name not in self.down_from_start]


class FakeRuntime:
    def __init__(self, world):
        self.world = world

    def show_stat(self):
        rows = []
        for pool in ("api_pool", "api_ws_pool"):
            for name in (VICTIM, SURVIVOR):
                status = self.world.status(name)
                check = "L7OK" if status.startswith("UP") else "L4TOUT"
                rows.append(ServerStat(pool, name, status, 1, 0, check))
        rows.append(ServerStat("stream_pool", "stream-server-1", "UP", 1, 0, "L4OK"))
        return rows


class FakeStopper:
    method = "fake"

    def __init__(self, world, victim=VICTIM):
        self.world = world
        self.victim = victim

    def stop(self):
        self.world.events.append(("stop", self.victim))
        self.world.running[self.victim] = False
        self.world.changed_at[self.victim] = self.world.now

    def start(self):
        self.world.events.append(("start", self.victim))
        self.world.running[self.victim] = True
        self.world.changed_at[self.victim] = self.world.now

    def describe(self, action):
        return f"fake-{action} {self.victim}"


def reply(status, instance, body=None):
    return Reply(status, [], body if body is not None else json.dumps({"instance": instance}), 0.01)


class FakeHttp:
    """Round robin over serving backends; ``while_down`` scripts the n-th request (1-based) made while
    the victim is stopped: an HttpReply, or an exception to raise."""

    def __init__(self, world, while_down=None):
        self.world = world
        self.while_down = dict(while_down or {})
        self.calls = 0
        self.down_calls = 0

    def __call__(self, path, headers=None, timeout=2.0):
        self.world.now += 0.01
        self.calls += 1
        if not self.world.running[VICTIM]:
            self.down_calls += 1
            scripted = self.while_down.get(self.down_calls)
            if isinstance(scripted, BaseException):
                raise scripted
            if scripted is not None:
                return scripted
        serving = self.world.serving()
        if not serving:
            return reply(503, None, "<html>503 Service Unavailable</html>")
        return reply(200, serving[self.calls % len(serving)])


class FakeSession(WsSession):
    """The facade's session (greeting, cookie, echo, wait_closed are the real code) over a fake connection."""

    def __init__(self, world, instance, set_cookie):
        super().__init__(connection=None, greeting={"instance": instance, "version": "v1"})
        self.world = world
        self.instance = instance
        self._cookies = [f"SERVERID={set_cookie}; path=/"] if set_cookie else []
        self.inbox = []
        self.closed = False

    @property
    def cookies(self):
        return self._cookies

    def recv_text(self, timeout=5.0):
        if not self.world.running[self.instance]:
            raise SessionClosed("received 1006 (connection closed abnormally)")
        if self.inbox:
            return self.inbox.pop(0)
        self.world.now += timeout
        raise TimeoutError("no WebSocket message before the timeout")

    def send_text(self, text):
        if not self.world.running[self.instance]:
            raise SessionClosed("connection broken")
        self.inbox.append(json.dumps({"instance": self.instance, "echo": text}))

    def close(self):
        self.closed = True


class FakeWs:
    """HAProxy's cookie logic: a cookie naming a serving backend sticks, otherwise a new one is set."""

    def __init__(self, world):
        self.world = world
        self.sessions = []

    def __call__(self, path, cookie):
        wanted = cookie.partition("=")[2]
        serving = self.world.serving()
        if wanted in serving:
            session = FakeSession(self.world, wanted, None)
        else:
            session = FakeSession(self.world, serving[0], serving[0])
        self.sessions.append(session)
        return session


class FakeLoad:
    """The background load in fake time: one request per 50 ms of fake time while started;
    requests sent inside ``fail_between`` (fake clock times) fail with a timeout."""

    rate = 20.0

    def __init__(self, world, fail_between=None, post_every=0):
        self.world = world
        self.samples = []
        self.fail_between = fail_between
        self.post_every = post_every
        self.running = False
        self.last = None
        world.on_sleep.append(self.tick)

    def start(self):
        self.running = True
        self.last = self.world.now

    def tick(self, now):
        while self.running and self.last + 0.05 <= now:
            self.last += 0.05
            index = len(self.samples)
            method = "POST" if self.post_every and index % self.post_every == self.post_every - 1 else "GET"
            if self.fail_between and self.fail_between[0] <= self.last < self.fail_between[1]:
                self.samples.append(Sample(self.last, "timeout", None, None, 2.0, "timed out", method=method,
                                           key=f"id-{index}"))
            else:
                serving = self.world.serving()
                self.samples.append(Sample(self.last, "ok", 200, serving[index % len(serving)], 0.003, method=method,
                                           key=f"id-{index}"))

    def stop(self):
        self.running = False
        return True


class FakeMetrics:
    """HAProxy's exporter: the server status per state, and an UP->DOWN counter that rises once per DOWN
    (``lag``: seconds the exporter trails the runtime API; ``extra_rise``: a flapping count)."""

    url = "http://lb:8405/metrics"

    def __init__(self, world, lag=0.0, extra_rise=0):
        self.world = world
        self.lag = lag
        self.extra_rise = extra_rise
        self.reads = 0

    def read(self):
        self.reads += 1
        self.world.now += 0.02
        samples = []
        for name in (VICTIM, SURVIVOR):
            lagging = self.world.now - self.world.changed_at[name] < self.world.detect_after + self.lag
            down = self.world.status(name) == "DOWN" and not lagging
            stopped_once = name == VICTIM and self.world.changed_at[name] > 0 and not self.world.running[name]
            labels = {"proxy": "api_pool", "server": name}
            samples += [MetricSample("haproxy_server_status", labels | {"state": "UP"}, float(not down)),
                        MetricSample("haproxy_server_status", labels | {"state": "DOWN"}, float(down)),
                        MetricSample("haproxy_server_check_up_down_total", labels,
                                     5.0 + (1 + self.extra_rise if stopped_once and down else 0))]
        return samples


def make_test(world, *, http=None, ws=True, load=None, metrics=None, **settings):
    stream = io.StringIO()
    test = FailoverTest(
        FailoverSettings(victim=VICTIM, websocket=ws, load=load is not None, **settings),
        runtime=FakeRuntime(world), stopper=FakeStopper(world), http_get=http or FakeHttp(world),
        ws_connect=FakeWs(world) if ws else None, load=load, metrics=metrics, output=Output(Masker(), stream),
        clock=world.clock, sleep=world.sleep,
    )
    return test, stream


def step(report, name):
    return next(s for s in report["steps"] if s["name"] == name)


# --- the sequence -------------------------------------------------------------------

def test_full_pass_fills_every_report_field():
    world = World()
    test, stream = make_test(world, load=FakeLoad(world))
    report = test.run()
    assert report["passed"], stream.getvalue()
    assert [s["status"] for s in report["steps"]] == ["pass"] * len(report["steps"])
    assert world.events == [("stop", VICTIM), ("start", VICTIM)]
    assert 1.2 <= report["detect_down_seconds"] < 1.5
    assert 3.0 <= report["recover_up_seconds"] < 3.3
    for field in ("name", "passed", "seconds", "detail", "status"):
        assert all(field in s for s in report["steps"])
    requests = report["requests"]
    assert requests["total"] > 0 and requests["failed"] == 0
    assert set(requests["by_phase"]) == {"before_kill", "kill_to_down", "down_window", "recovery"}
    assert all(phase["total"] > 0 for phase in requests["by_phase"].values())
    assert sum(p["total"] for p in requests["by_phase"].values()) == requests["total"]
    ws = report["websocket"]
    assert ws["enabled"] and set(ws["checks"]) == {STEP_WS_PINNED, STEP_WS_CLOSED, STEP_WS_REBALANCED, STEP_WS_STAYS}
    assert all(check["passed"] for check in ws["checks"].values())
    rebalanced = ws["seen"]["rebalanced"]
    assert (rebalanced["instance"], rebalanced["set_cookie"]) == (SURVIVOR, SURVIVOR)
    assert report["timeline"]["down"] <= rebalanced["seconds_after_t0"] <= report["timeline"]["down"] + 1
    assert report["timeline"]["t0"] == 0.0 and report["timeline"]["down"] > 0
    assert [row["status"] for row in report["final_pool"]] == ["UP", "UP"]
    assert "final api_pool: backend-api-1 UP" in stream.getvalue()
    json.dumps(report)  # plain data only


def test_victim_never_down_fails_step_3_with_timeout_and_still_restarts():
    world = World(never_down=True)
    test, stream = make_test(world, down_timeout=5, ws=False)
    report = test.run()
    assert not report["passed"]
    down = step(report, STEP_DOWN)
    assert down["status"] == "fail"
    assert "timed out after 5s" in down["detail"] and "last seen UP 1/3" in down["detail"]
    assert step(report, STEP_DOWN_WINDOW)["status"] == "skip"
    assert step(report, STEP_RESTORE)["status"] == "pass"
    assert world.events == [("stop", VICTIM), ("start", VICTIM)]
    assert report["detect_down_seconds"] is None and report["recover_up_seconds"] >= 3.0
    assert "FAIL" in stream.getvalue() and "final api_pool:" in stream.getvalue()


def test_backend_already_down_fails_preflight_and_stops_nothing():
    world = World(down_from_start={SURVIVOR})
    test, _ = make_test(world, load=FakeLoad(world))
    report = test.run()
    assert not report["passed"]
    preflight = step(report, STEP_PREFLIGHT)
    assert preflight["status"] == "fail"
    assert "backend-api-2 is DOWN" in preflight["detail"] and "nothing was stopped" in preflight["detail"]
    assert world.events == []
    assert all(s["status"] == "skip" for s in report["steps"][1:])
    assert report["requests"]["total"] == 0  # the load never started


def test_unknown_victim_fails_preflight():
    world = World()
    test, _ = make_test(world, ws=False)
    test.settings.victim = "backend-api-9"
    report = test.run()
    assert "backend-api-9 is not a server of api_pool" in step(report, STEP_PREFLIGHT)["detail"]
    assert world.events == []


def test_non_200_while_down_fails_step_4_naming_the_response_and_continues_to_recovery():
    world = World()
    http = FakeHttp(world, while_down={3: reply(503, SURVIVOR, "no server available")})
    test, _ = make_test(world, http=http, ws=False)
    report = test.run()
    assert not report["passed"]
    window = step(report, STEP_DOWN_WINDOW)
    assert window["status"] == "fail"
    assert window["detail"].startswith("4/5 ok; request")
    assert "request 3: HTTP 503: 'no server available'" in window["detail"]
    assert window["data"]["failed"] == 1
    assert step(report, STEP_RECOVERY)["status"] == "pass"
    assert world.events == [("stop", VICTIM), ("start", VICTIM)]


def test_connection_error_while_down_is_named():
    world = World()
    # Requests 1-2 while down belong to the WebSocket checks' world; the GETs start at call 1 without WS.
    http = FakeHttp(world, while_down={1: ConnectionResetError("reset by peer")})
    test, _ = make_test(world, http=http, ws=False)
    report = test.run()
    assert "request 1: no response (ConnectionResetError: reset by peer)" in step(report, STEP_DOWN_WINDOW)["detail"]


def test_ctrl_c_during_the_down_window_restarts_the_victim():
    world = World()
    http = FakeHttp(world, while_down={2: KeyboardInterrupt()})
    test, stream = make_test(world, http=http, load=FakeLoad(world))
    report = test.run()
    assert report["interrupted"] and not report["passed"]
    assert world.events == [("stop", VICTIM), ("start", VICTIM)]
    assert world.status(VICTIM) == "UP"
    assert step(report, STEP_RESTORE)["status"] == "pass"
    assert step(report, STEP_LOAD_TOTAL)["status"] == "pass"
    assert "interrupted (Ctrl-C)" in stream.getvalue()
    assert not any(s.closed is False for s in test.websocket.ws_connect.sessions)


def test_ctrl_c_while_stopping_still_starts_the_victim():
    world = World()
    test, _ = make_test(world, ws=False)

    def interrupted_stop():
        world.running[VICTIM] = False
        world.changed_at[VICTIM] = world.now
        raise KeyboardInterrupt

    test.stopper.stop = interrupted_stop
    report = test.run()
    assert report["interrupted"]
    assert world.events == [("start", VICTIM)] and world.running[VICTIM]


def test_failed_start_is_retried_once_by_the_wind_down():
    world = World()
    test, _ = make_test(world, ws=False)
    real_start = test.stopper.start
    attempts = []

    def flaky_start():
        attempts.append(world.now)
        if len(attempts) == 1:
            raise RuntimeError("incus: transient error")
        real_start()

    test.stopper.start = flaky_start
    report = test.run()
    assert step(report, STEP_RECOVERY)["status"] == "fail"
    assert step(report, STEP_RESTORE)["status"] == "pass"
    assert len(attempts) == 2 and world.running[VICTIM]


def test_up_timeout_fails_step_5_without_a_second_start():
    world = World(up_after=1000)
    test, _ = make_test(world, ws=False, up_timeout=4)
    report = test.run()
    recovery = step(report, STEP_RECOVERY)
    assert recovery["status"] == "fail" and "never UP" in recovery["detail"] and "DOWN 1/2" in recovery["detail"]
    assert world.events == [("stop", VICTIM), ("start", VICTIM)]
    assert not any(s["name"] == STEP_RESTORE for s in report["steps"])


def test_failed_requests_under_load_fail_the_load_step_per_phase():
    world = World()
    start = world.now
    # Baseline and lead-in end about 1.05 s in; the stop follows, DOWN 1.2 s later.
    load = FakeLoad(world, fail_between=(start + 1.1, start + 1.6))
    test, _ = make_test(world, load=load, ws=False)
    report = test.run()
    assert not report["passed"]
    total = step(report, STEP_LOAD_TOTAL)
    assert total["status"] == "fail" and total["detail"].startswith("10 of ")
    requests = report["requests"]
    assert requests["failed"] == requests["timeouts"] == 10
    assert requests["by_phase"]["kill_to_down"]["timeouts"] == 10
    assert requests["by_phase"]["before_kill"]["failed"] == requests["by_phase"]["down_window"]["failed"] == 0
    assert step(report, STEP_RECOVERY)["status"] == "pass"


def test_posts_caught_between_the_failure_and_down_are_counted_apart_gets_are_not():
    world = World()
    start = world.now
    load = FakeLoad(world, fail_between=(start + 1.1, start + 1.6), post_every=2)
    test, _ = make_test(world, load=load, ws=False)
    report = test.run()
    total = step(report, STEP_LOAD_TOTAL)
    requests = report["requests"]
    assert total["status"] == "fail" and total["detail"].startswith("5 of ")  # the GETs
    assert "5 POST caught in the failure window" in total["detail"]
    assert requests["failed"] == 5 and requests["by_method"]["POST"]["timeout"] == 5
    assert len(requests["unsafe_caught_in_failure_window"]) == 5


def test_a_post_failing_outside_the_failure_window_is_a_failure():
    world = World()
    load = FakeLoad(world, fail_between=(world.now + 0.5, world.now + 0.6), post_every=1)  # before any stop
    test, _ = make_test(world, load=load, ws=False)
    report = test.run()
    assert not report["passed"] and report["requests"]["unsafe_caught_in_failure_window"] == []


def test_failing_traffic_before_the_kill_stops_nothing():
    world = World()
    load = FakeLoad(world, fail_between=(world.now + 0.5, world.now + 0.6))
    test, _ = make_test(world, load=load, ws=False)
    report = test.run()
    assert step(report, STEP_LOAD_FLOWING)["status"] == "fail"
    assert step(report, STEP_STOP)["status"] == "skip" and world.events == []
    assert step(report, STEP_LOAD_TOTAL)["status"] == "fail"


def test_websocket_that_does_not_follow_the_cookie_fails_pinning_only():
    world = World()
    test, _ = make_test(world)

    def wrong_backend(path, cookie):
        return FakeSession(world, SURVIVOR, SURVIVOR)

    test.websocket.ws_connect = wrong_backend
    report = test.run()
    assert "but the welcome came from backend-api-2" in step(report, STEP_WS_PINNED)["detail"]
    assert step(report, STEP_WS_CLOSED)["status"] == "skip"
    assert step(report, STEP_RECOVERY)["status"] == "pass"
    assert not report["passed"]


def test_websocket_left_open_at_the_kill_fails_the_close_check():
    world = World()
    test, _ = make_test(world, ws_timeout=2)
    original = test.websocket.ws_connect

    def immortal(path, cookie):
        session = original(path, cookie)
        session.world = World()  # a world where nothing ever stops: the session never closes
        return session

    test.websocket.ws_connect = immortal
    report = test.run()
    assert "still open 2s after DOWN" in step(report, STEP_WS_CLOSED)["detail"]


def test_no_websocket_and_no_load_run_the_seed_steps_only():
    world = World()
    test, _ = make_test(world, ws=False)
    report = test.run()
    assert report["passed"]
    assert [s["name"][0] for s in report["steps"]] == ["0", "1", "2", "3", "4", "5"]
    assert report["websocket"]["enabled"] is False and report["requests"]["enabled"] is False


def test_exporter_shows_down_and_one_more_up_down_transition():
    world = World()
    test, stream = make_test(world, ws=False, metrics=FakeMetrics(world))
    report = test.run()
    assert report["passed"], stream.getvalue()
    names = [s["name"] for s in report["steps"]]
    assert names.index(STEP_METRICS_BEFORE) < names.index(STEP_STOP) < names.index(STEP_METRICS_DOWN)
    seen = report["metrics"]["seen"]
    assert seen["before"] == {"status_up": 1.0, "status_down": 0.0, "check_up_down_total": 5.0}
    assert seen["down"]["status_down"] == 1.0 and seen["down"]["up_down_rise"] == 1
    assert seen["down"]["seconds_after_down"] <= 1.0
    assert "haproxy_server_check_up_down_total 5 → 6 (+1)" in step(report, STEP_METRICS_DOWN)["detail"]


def test_with_a_pair_the_exporter_that_saw_the_down_is_judged():
    """The balancer carrying the traffic sees the death first; the other one's exporter lags behind."""
    world = World()
    carrier, quiet = FakeMetrics(world), FakeMetrics(world, lag=5.0)
    carrier.url, quiet.url = "http://lb-1:8405/metrics", "http://lb-2:8405/metrics"
    test, stream = make_test(world, ws=False, metrics=[quiet, carrier])
    report = test.run()
    assert report["passed"], stream.getvalue()
    down = report["metrics"]["seen"]["down"]
    assert down["exporter"] == carrier.url and down["up_down_rise"] == 1
    assert "lb-1:8405" in step(report, STEP_METRICS_BEFORE)["detail"] and "lb-2:8405" in step(report, STEP_METRICS_BEFORE)["detail"]


def test_exporter_late_by_more_than_a_second_fails_its_step_only():
    world = World()
    test, _ = make_test(world, ws=False, metrics=FakeMetrics(world, lag=1.5))
    report = test.run()
    down = step(report, STEP_METRICS_DOWN)
    assert down["status"] == "fail" and "not 1 within 1s" in down["detail"] and "last read 0.0" in down["detail"]
    assert step(report, STEP_RECOVERY)["status"] == "pass" and not report["passed"]


def test_exporter_counting_two_transitions_fails():
    world = World()
    test, _ = make_test(world, ws=False, metrics=FakeMetrics(world, extra_rise=1))
    report = test.run()
    assert "5 → 7: rose by 2, not 1" in step(report, STEP_METRICS_DOWN)["detail"]


def test_unreachable_exporter_fails_before_the_stop_and_skips_the_down_check():
    world = World()
    metrics = FakeMetrics(world)

    def refused():
        raise ConnectionRefusedError("connection refused")

    metrics.read = refused
    test, _ = make_test(world, ws=False, metrics=metrics)
    report = test.run()
    assert "ConnectionRefusedError: connection refused" in step(report, STEP_METRICS_BEFORE)["detail"]
    assert step(report, STEP_METRICS_DOWN)["status"] == "skip"
    assert step(report, STEP_DOWN)["status"] == "pass" and not report["passed"]


def test_the_exporter_address_comes_from_the_bind_and_a_wildcard_means_the_balancer():
    from fabfile.monitoring.settings import exporter_address
    from fabfile.values import InvalidValue

    lb = Host(name="haproxy", inventory_vars={"address": "10.0.0.10"}, groups=["haproxy"])
    assert exporter_address(lb, {"haproxy_metrics_bind": ""}) is None
    assert exporter_address(lb, {"haproxy_metrics_bind": "10.0.0.11:8405"}) == "10.0.0.11:8405"
    assert exporter_address(lb, {"haproxy_metrics_bind": "*:8405"}) == "10.0.0.10:8405"
    assert exporter_address(lb, {"haproxy_metrics_bind": ":::8405"}) == "10.0.0.10:8405"
    assert exporter_address(lb, {"haproxy_metrics_bind": "[::1]:8405"}) == "[::1]:8405"
    with pytest.raises(InvalidValue, match="haproxy_metrics_bind"):
        exporter_address(lb, {"haproxy_metrics_bind": "[::zz]:8405"})


# --- stoppers ---------------------------------------------------------------------------

def host(name, **variables):
    return Host(name=name, inventory_vars={"address": "10.0.0.5", "connection": "incus", **variables},
                groups=["backend_api_instances"])


def test_incus_stopper_uses_the_remote_instance_name_and_tolerates_already_running():
    calls = []

    class Driver:
        def run(self, *args, timeout, check):
            calls.append(["incus", *args])
            if args[0] == "start":
                return Result("start", 1, "", "Error: The instance is already running")
            return Result("stop", 0, "", "")

    stopper = make_stopper(None, host("backend-api-1", incus_remote="lab2"), None, "u", 8080)
    stopper.driver = Driver()
    stopper.stop()
    stopper.start()
    assert calls == [["incus", "stop", "--force", "--", "lab2:backend-api-1"], ["incus", "start", "--", "lab2:backend-api-1"]]


def test_incus_stopper_failure_is_a_stopper_error():
    class Driver:
        def run(self, *args, timeout, check):
            return Result("stop", 1, "", "Error: not found")

    stopper = IncusStopper("backend-api-1", Driver())
    with pytest.raises(Exception, match="exit 1.*not found"):
        stopper.stop()


class RecordingTransport:
    name = "backend-api-1"

    def __init__(self):
        self.commands = []

    def run(self, command, warn=False, timeout=None):
        self.commands.append(command)
        return Result(command, 0, "", "")


def test_unit_stopper_kills_then_stops_the_unit_quoted():
    transport = RecordingTransport()
    stopper = make_stopper("unit", host("backend-api-1"), transport, "veza backend", 8080)
    stopper.stop()
    stopper.start()
    assert transport.commands == ["systemctl kill --signal=SIGKILL 'veza backend'; systemctl stop 'veza backend'",
                                  "systemctl start 'veza backend'"]


def test_freeze_stopper_stops_and_continues_only_the_main_process():
    transport = RecordingTransport()
    stopper = make_stopper("freeze", host("backend-api-1"), transport, "veza-backend-api", 8080)
    stopper.stop()
    stopper.start()
    assert transport.commands == ["systemctl kill --kill-whom=main --signal=SIGSTOP veza-backend-api",
                                  "systemctl kill --kill-whom=main --signal=SIGCONT veza-backend-api"]


def test_drop_stopper_silences_the_service_port_both_ways_and_deletes_only_its_table():
    transport = RecordingTransport()
    stopper = make_stopper("drop", host("backend-api-1"), transport, "veza-backend-api", 8081)
    stopper.stop()
    stopper.start()
    stop, start = transport.commands
    assert "tcp dport 8081 drop" in stop and "tcp sport 8081 drop" in stop
    assert "flush table inet veza_failover_drop" in stop  # a second stop converges on one table
    assert "command -v nft" in stop  # a host without nft says so instead of a shell error
    assert start == ("if nft list table inet veza_failover_drop >/dev/null 2>&1; "
                     "then nft delete table inet veza_failover_drop; fi")


def test_stop_method_defaults_follow_the_connection():
    incus_host, ssh_host = host("backend-api-1"), host("backend-api-1", connection="ssh")
    assert make_stopper(None, incus_host, IncusTransport(incus_host), "u", 8080).method == "incus"
    assert make_stopper(None, ssh_host, SshTransport(ssh_host), "u", 8080).method == "unit"
    assert make_stopper("unit", incus_host, IncusTransport(incus_host), "u", 8080).method == "unit"
    with pytest.raises(ValueError, match="not reached through incus"):
        make_stopper("incus", ssh_host, SshTransport(ssh_host), "u", 8080)
    with pytest.raises(ValueError, match="not valid"):
        make_stopper("incus", host("--all"), None, "u", 8080)
    with pytest.raises(ValueError, match="use one of incus, unit, freeze, drop"):
        make_stopper("pause", incus_host, None, "u", 8080)


# --- phases and the WebSocket session -------------------------------------------------------

def test_phase_counts_assign_by_intended_send_time():
    samples = [Sample(t, "ok" if t != 2.5 else "timeout", 200, "a", 0.01) for t in (0.5, 1.5, 2.5, 3.5, 4.5)]
    phases = phase_counts(samples, [("before_kill", 0.0), ("kill_to_down", 2.0), ("down_window", None),
                                      ("recovery", 3.0)])
    assert {name: (p["total"], p["failed"]) for name, p in phases.items()} == {
        "before_kill": (2, 0), "kill_to_down": (1, 1), "recovery": (2, 0)}


def test_wait_closed_and_session_cookie():
    world = World()
    session = FakeSession(world, VICTIM, VICTIM)
    assert session.cookie("SERVERID") == VICTIM and session.cookie("OTHER") is None
    assert session.echo("hi") == {"instance": VICTIM, "echo": "hi"}
    assert session.wait_closed(1.0) is None  # nothing arrives: a timeout, still open
    world.running[VICTIM] = False
    assert "1006" in session.wait_closed(1.0)


# --- report picture and the task ---------------------------------------------------------------

def test_svg_is_well_formed_with_marks_and_one_dot_per_request_per_panel():
    world = World()
    test, _ = make_test(world, load=FakeLoad(world, fail_between=(world.now + 1.1, world.now + 1.2)))
    report = test.run()
    svg = render_svg(report)
    root = ET.fromstring(svg)
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for label in ("t0 stop", "DOWN", "start", "UP", "Failover FAILED", "failed", SURVIVOR):
        assert label in texts
    circles = list(root.iter("{http://www.w3.org/2000/svg}circle"))
    assert len(circles) == 2 * report["requests"]["total"] + 2  # + the legend's two
    assert render_svg({"passed": True, "steps": []}).startswith("<svg")  # no load, no marks: still a picture


def write_inventory(tmp_path, connection="incus"):
    path = tmp_path / "hosts.yaml"
    path.write_text(f"""all:
  vars: {{connection: {connection}}}
  children:
    haproxy: {{hosts: {{haproxy: {{address: 127.0.0.1}}}}}}
    backend_api_instances:
      hosts:
        backend-api-1: {{address: 127.0.0.2}}
        backend-api-2: {{address: 127.0.0.3}}
""")
    return str(path)


def test_task_rejects_bad_flags_before_touching_anything(tmp_path, capsys):
    inventory = write_inventory(tmp_path, connection="ssh")
    for kwargs, message in [
        ({"victim": "backend-api-9"}, "--victim backend-api-9: not a host of backend_api_instances"),
        ({"stop_method": "reboot"}, "--stop-method reboot: use one of incus, unit"),
        ({"stop_method": "incus"}, "not reached through incus"),
        ({"load_rate": "0"}, "--load-rate 0: must be a number > 0 and <= 50000"),
        ({"load_rate": "abc"}, "--load-rate 'abc': not a number"),
        ({"load_rate": "nan"}, "--load-rate 'nan': not a number"),
        ({"load_rate": "1e9"}, "--load-rate 1e9: must be a number > 0 and <= 50000"),
        ({"down_timeout": "-1"}, "--down-timeout -1: must be a number > 0 and <= 3600"),
        ({"up_timeout": "x"}, "--up-timeout 'x': not a number"),
    ]:
        with pytest.raises(Exit) as exited:
            test_tasks.failover(Context(), inventory=inventory, **kwargs)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert message in err and err.count("error:") == 1 and "Traceback" not in err


def test_task_exit_codes_follow_the_result(tmp_path, monkeypatch):
    inventory = write_inventory(tmp_path)
    outcomes = {"passed": True, "interrupted": False}

    class StubTest:
        def __init__(self, settings, **deps):
            assert settings.victim == VICTIM and settings.cookie_name == "SERVERID" and settings.ws_path == "/api/v1/ws"
            assert deps["stopper"].method == "incus" and deps["load"].rate == 20.0
            assert deps["metrics"] is None  # no haproxy_metrics_bind in this inventory

        def run(self):
            self.interruption = KeyboardInterrupt() if outcomes["interrupted"] else None
            return {**outcomes, "steps": []}

    monkeypatch.setattr(sequence, "FailoverTest", StubTest)
    report = tmp_path / "fo.json"
    test_tasks.failover(Context(), inventory=inventory, report=str(report), plot=str(tmp_path / "fo.svg"))
    assert json.loads(report.read_text())["passed"] is True
    assert (tmp_path / "fo.svg").read_text().startswith("<svg")
    outcomes["passed"] = False
    with pytest.raises(Exit) as exited:
        test_tasks.failover(Context(), inventory=inventory)
    assert exited.value.code == 1
    outcomes["interrupted"] = True
    with pytest.raises(Exit) as exited:
        test_tasks.failover(Context(), inventory=inventory)
    assert exited.value.code == 130
