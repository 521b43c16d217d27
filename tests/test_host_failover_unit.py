"""test.host-failover's pure parts and its sequence (fabfile/failover/host_failover.py) against a fake host:
what the drill takes out and refuses, DOWN/UP times judged against the budget, flapping, the VIP move
window, the host always brought back (also on Ctrl-C), the host stoppers' commands, the plot."""

import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from fabfile.exits import UsageError
from fabfile.failover.host_failover import HostFailoverRun, HostFailoverSettings
from fabfile.failover.host_outage import Server, first_at, flaps, is_down, is_up, pick_host, plan_outage
from fabfile.failover.host_plot import render_svg
from fabfile.failover.stoppers import HostFreeze, HostStop, LinkCut, StopperError, make_host_stopper, parse_link
from fakes import FakeLoad

POOLS = [("backend_api_instances", "api_pool"), ("stream_server_instances", "stream_pool")]


# -- the inventory side -------------------------------------------------------------------------------------
class Host(SimpleNamespace):
    pass


class Inventory:
    def __init__(self, placement, entries=({"name": "incus-2", "address": "10.0.0.50"},)):
        """``placement``: {group: {host: remote}}."""
        self.path = "hosts.yaml"
        self.groups = {group: [Host(name=name, connection="incus", vars={"incus_remote": remote})
                               for name, remote in members.items()] for group, members in placement.items()}
        self.hosts = {h.name: h for members in self.groups.values() for h in members}
        first = next(iter(self.hosts.values()))
        first.vars["lab_incus_hosts"] = list(entries)

    def group(self, name):
        return self.groups.get(name, [])


def two_host_inventory(**changes):
    placement = {"haproxy": {"haproxy": "local", "haproxy-2": "incus-2"},
                 "backend_api_instances": {"backend-api-1": "local", "backend-api-2": "local", "backend-api-3": "incus-2"},
                 "stream_server_instances": {"stream-server-1": "local", "stream-server-3": "incus-2"}}
    placement.update(changes)
    return Inventory(placement)


def test_the_plan_names_what_lives_on_the_host_and_what_survives():
    inventory = two_host_inventory()
    plan = plan_outage(inventory, pick_host(inventory, None), "haproxy", POOLS)
    assert plan.host == "incus-2" and plan.address == "10.0.0.50"
    assert plan.balancers == ["haproxy-2"] and plan.survivors == ["haproxy"]
    assert plan.servers == [Server("api_pool", "backend-api-3"), Server("stream_pool", "stream-server-3")]
    assert plan.others == {"api_pool": ["backend-api-1", "backend-api-2"], "stream_pool": ["stream-server-1"]}


@pytest.mark.parametrize("changes, needle", [
    ({"stream_server_instances": {"stream-server-3": "incus-2", "stream-server-4": "incus-2"}},
     "every server of stream_pool"),
    ({"haproxy": {"haproxy": "incus-2", "haproxy-2": "incus-2"}}, "no balancer of 'haproxy' is off"),
])
def test_a_drill_that_would_be_an_outage_is_refused(changes, needle):
    inventory = two_host_inventory(**changes)
    with pytest.raises(UsageError, match=needle):
        plan_outage(inventory, pick_host(inventory, None), "haproxy", POOLS)


def test_the_host_comes_from_lab_incus_hosts():
    inventory = two_host_inventory()
    with pytest.raises(UsageError, match="--host incus-9: not a lab_incus_hosts entry .*incus-2"):
        pick_host(inventory, "incus-9")
    empty = Inventory({"haproxy": {"haproxy": "local"}}, entries=())
    with pytest.raises(UsageError, match="no lab_incus_hosts"):
        pick_host(empty, None)
    several = Inventory({"haproxy": {"haproxy": "local"}}, entries=({"name": "a"}, {"name": "b"}))
    with pytest.raises(UsageError, match="several lab_incus_hosts .*--host"):
        pick_host(several, None)
    assert pick_host(several, "b") == {"name": "b"}


def test_first_at_and_flaps_read_status_changes():
    changes = [(1.0, "UP"), (5.0, "UP 2/3"), (5.5, "DOWN"), (9.0, "DOWN 1/2"), (9.2, "UP"), (12.0, "UP 2/3")]
    assert first_at(changes, is_down, 4.0) == 5.5
    assert first_at(changes, is_up, 4.0) == 4.0  # already UP at the moment asked about
    assert first_at(changes, is_up, 6.0) == 9.2
    assert first_at(changes, is_down, 9.5) is None
    assert flaps(changes, 9.2) == [(12.0, "UP 2/3")]
    assert flaps(changes[:5], 9.2) == [] and flaps(changes, None) == []
    assert is_down("MAINT (via api_pool/x)") and not is_down("DOWN 1/2") and not is_up("UP 1/3")


# -- the stoppers -------------------------------------------------------------------------------------------
def test_host_stoppers_are_incus_commands_on_the_outer_container():
    assert make_host_stopper("stop", "incus-2", "br0").describe("stop") == "incus stop --force -- incus-2"
    freeze = make_host_stopper("freeze", "incus-2", "br0")
    assert isinstance(freeze, HostFreeze) and freeze.describe("stop") == "incus pause -- incus-2"
    assert freeze.describe("start") == "incus resume -- incus-2"
    assert isinstance(make_host_stopper("stop", "incus-2", "br0"), HostStop)
    with pytest.raises(ValueError, match="--method boom: use one of stop, freeze, cut"):
        make_host_stopper("boom", "incus-2", "br0")
    with pytest.raises(Exception, match="not valid"):
        make_host_stopper("stop", "--all", "br0")


class FakeIncus:
    def __init__(self, host_name):
        self.host_name = host_name

    def query(self, path):
        return {"status": "Running", "network": {"eth0": {"host_name": self.host_name}}}


def test_the_cut_touches_only_the_hosts_port_on_the_lab_bridge():
    calls = []

    def run(argv, timeout=None):
        calls.append(argv)
        master = "br0" if "veth1" in argv else "docker0"
        stdout = f'[{{"ifname": "{argv[-1]}", "master": "{master}"}}]' if argv[:2] == ["ip", "-json"] else ""
        return SimpleNamespace(ok=True, stdout=stdout, command=" ".join(argv), exited=0, tail=lambda n=2: "")

    cut = LinkCut("incus-2", "br0", driver=FakeIncus("veth1"), run=run)
    cut.stop()
    cut.start()
    assert calls[1:] == [["ip", "link", "set", "dev", "veth1", "down"], ["ip", "link", "set", "dev", "veth1", "up"]]
    assert cut.describe("start") == "ip link set dev veth1 up"
    elsewhere = LinkCut("incus-2", "br0", driver=FakeIncus("veth9"), run=run)
    with pytest.raises(StopperError, match="veth9 is on 'docker0', not the lab bridge br0; refusing"):
        elsewhere.stop()
    assert parse_link("not json") == {} and parse_link('["x"]') == {} and parse_link('[{"master": "br0"}]')["master"] == "br0"


# -- the sequence against a fake host ------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(seconds, 0.0)


class FakeHost:
    """The host's physics on the fake clock: out at the strike, back at the start; each server DOWN
    ``down_after`` seconds after the strike, UP ``up_after`` after the start, optionally DOWN again."""

    def __init__(self, clock, down_after=1.5, up_after=2.0, flap_after=None, interrupt_at_start=False):
        self.clock, self.down_after, self.up_after, self.flap_after = clock, down_after, up_after, flap_after
        self.out_at = self.back_at = None
        self.interrupt_at_start = interrupt_at_start
        self.starts = 0

    # the stopper
    method = "stop"

    def stop(self):
        self.out_at = self.clock()
        self.clock.sleep(0.5)

    def start(self):
        self.starts += 1
        self.back_at = self.clock()

    def describe(self, action):
        return f"fake {action}"

    def ready(self):
        out = self.out_at is not None and (self.back_at is None or self.clock() < self.back_at + 1.0)
        return (not out), "out" if out else "running"


class FakeServers:
    def __init__(self, host, servers):
        self.host, self.servers, self.reads, self.error_count = host, servers, 0, 0
        self.started = None

    def start(self):
        self.started = self.host.clock()

    def stop(self):
        pass

    @property
    def changes(self):
        h, now = self.host, self.host.clock()
        timeline = [(self.started, "UP")]
        if h.out_at is not None:
            timeline.append((h.out_at + h.down_after, "DOWN"))
        if h.back_at is not None:
            timeline.append((h.back_at + h.up_after, "UP"))
            if h.flap_after is not None:
                timeline.append((h.back_at + h.up_after + h.flap_after, "DOWN"))
        return {server: [c for c in timeline if c[0] <= now] for server in self.servers}

    def status(self, server):
        changes = self.changes[server]
        return changes[-1][1] if changes else None

    def all(self, predicate):
        return all(predicate(self.status(s) or "") for s in self.servers)


class FakeVip:
    def __init__(self, clock, holds):
        self.clock, self.holds, self.start_at = clock, holds, clock()

    @property
    def samples(self):
        count = int((self.clock() - self.start_at) / 0.1) + 1
        return [(self.start_at + i * 0.1, self.holds(self.start_at + i * 0.1)) for i in range(count)]

    def alive(self):
        return True

    def stop(self):
        pass


def failing_windows(failing):
    """Requests of a kind due in one of its ``failing`` {kind: [(from, to)]} windows (seconds since the load
    started) time out."""
    return lambda kind, t, since_start: "timeout" if any(a <= since_start < b for a, b in failing.get(kind, ())) else None


class Output:
    def __init__(self):
        self.lines = []

    def line(self, text):
        self.lines.append(text)


def make_run(vip_on_host=False, failing=None, down_budget=3.0, **host):
    clock = Clock()
    fake = FakeHost(clock, **host)
    inventory = two_host_inventory()
    plan = plan_outage(inventory, pick_host(inventory, None), "haproxy", POOLS)
    load = FakeLoad(clock, 0.1, failing_windows(failing or {}), instance="backend-api-1")

    def holds(node):
        def at(t):
            if fake.out_at is None or t < fake.out_at:
                return (node == "haproxy-2") == vip_on_host
            return node == "haproxy" and (not vip_on_host or t >= fake.out_at + 1.0)
        return at

    run = HostFailoverRun(HostFailoverSettings("stop", down_budget=down_budget, dwell=1.0, settle=3.0, lead_in=1.0),
                          plan, stopper=fake, host_ready=fake.ready, servers=FakeServers(fake, plan.servers),
                          load=load, output=Output(), vip_sampler=lambda node, seconds: FakeVip(clock, holds(node)),
                          clock=clock, sleep=clock.sleep)
    return run, fake


def steps(report):
    return {step["name"]: step for step in report["steps"]}


def test_a_clean_drill_passes_with_times_relative_to_t0():
    run, fake = make_run()
    report = run.run()
    assert report["passed"], [s for s in report["steps"] if not s["passed"]]
    assert [i["down_seconds"] for i in report["instances"]] == [1.5, 1.5]
    assert [i["up_seconds"] for i in report["instances"]] == [2.0, 2.0]
    assert report["vip"]["held_before"] == ["haproxy"] and report["vip"]["move_seconds"] == 0.0
    assert report["requests"]["new_failed_outside_vip_move"] == 0 and fake.starts == 1
    assert report["timeline"]["t0"] == 0.0 and report["host_back_seconds"] == 1.0


def test_a_server_down_after_the_budget_fails_its_step_and_the_host_still_comes_back():
    run, fake = make_run(down_after=4.0, down_budget=3.0)
    report = run.run()
    failed = [s for s in report["steps"] if s["status"] == "fail"]
    assert {s["name"] for s in failed} == {"3 DOWN api_pool/backend-api-3", "3 DOWN stream_pool/stream-server-3"}
    assert "DOWN 4.00s after t0 (budget 3s)" in failed[0]["detail"] and not report["passed"]
    assert fake.starts == 1 and steps(report)["6 host back"]["passed"]


def test_a_server_that_goes_down_again_after_coming_back_is_flapping():
    run, _ = make_run(flap_after=1.0)
    report = run.run()
    assert not steps(report)["8 no flapping"]["passed"]
    assert "api_pool/backend-api-3" in steps(report)["8 no flapping"]["detail"]


def test_new_connection_failures_fail_unless_sent_to_a_dying_vip_holder_before_the_vip_moved():
    run, _ = make_run(failing={"new": [(1.2, 1.5)]})  # VIP on the survivor: nothing may fail
    report = run.run()
    assert not steps(report)["9 load: new connections"]["passed"]
    run, _ = make_run(vip_on_host=True, failing={"new": [(1.2, 1.5)], "keepalive": [(1.0, 1.4)]})
    report = run.run()
    new = steps(report)["9 load: new connections"]
    assert new["passed"] and "3 more sent to haproxy-2" in new["detail"], new
    assert report["requests"]["new_failed_in_vip_move"] == 3 and report["vip"]["move_seconds"] == pytest.approx(1.0)
    assert steps(report)["9 load: kept-alive"]["passed"]  # 4 failures on 8 connections
    run, _ = make_run(vip_on_host=True, failing={"new": [(6.0, 6.2)]})  # long after the VIP moved
    assert not steps(run.run())["9 load: new connections"]["passed"]


def test_kept_alive_connections_may_lose_one_request_each_not_more():
    run, _ = make_run(failing={"keepalive": [(1.0, 2.0)]})  # 10 failures on 8 connections
    assert not steps(run.run())["9 load: kept-alive"]["passed"]


def test_ctrl_c_mid_drill_brings_the_host_back_and_reports_interrupted():
    run, fake = make_run()

    def interrupted():
        raise KeyboardInterrupt

    run._carry = interrupted
    report = run.run()
    assert report["interrupted"] and not report["passed"] and fake.starts == 1
    assert steps(report)["cleanup: host brought back"]["passed"]
    assert steps(report)["6 host back"]["status"] == "skip"
    assert any("bringing incus-2 back" in line for line in run.output.lines)


def test_a_host_not_ready_is_never_touched():
    run, fake = make_run()
    fake.out_at = fake.clock()  # already out, and never coming back
    run.host.probe = lambda: (False, "outer container Stopped")
    report = run.run()
    assert "not ready: outer container Stopped; nothing was touched" in steps(report)["0 pre-flight"]["detail"]
    assert fake.starts == 0 and steps(report)["2 take the host out (t0)"]["status"] == "skip"


def test_the_plot_shows_servers_vip_lanes_and_marks():
    run, _ = make_run(vip_on_host=True)
    svg = render_svg(run.run())
    root = ET.fromstring(svg)
    labels = [el.text for el in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "api_pool/backend-api-3" in labels and "VIP on haproxy-2" in labels and "all DOWN" in labels


# -- the task refuses a drill it cannot run, before touching anything -----------------------------------------
TWO_HOSTS = """all:
  vars:
    connection: incus
    lab_network: labbr0
    lab_subnet: 10.99.0.0/24
    lab_incus_hosts:
      - {name: incus-2, address: 10.99.0.50, inner_subnet: 10.99.1.0/24}
  children:
    haproxy:
      hosts:
        haproxy: {address: 10.99.0.10}
        haproxy-2: {address: 10.99.0.11, incus_remote: incus-2}
    backend_api_instances:
      hosts:
        backend-api-1: {address: 10.99.0.21%(api_1)s}
        backend-api-3: {address: 10.99.0.23, incus_remote: incus-2}
"""


@pytest.mark.parametrize("inventory, flags, needle", [
    (TWO_HOSTS % {"api_1": ""}, ["--host", "incus-9"], "--host incus-9: not a lab_incus_hosts entry"),
    (TWO_HOSTS % {"api_1": ", incus_remote: incus-2"}, [], "every server of api_pool"),
    (TWO_HOSTS.replace("    lab_incus_hosts:\n      - {name: incus-2, address: 10.99.0.50, inner_subnet: 10.99.1.0/24}\n", "")
     % {"api_1": ""}, [], "no lab_incus_hosts"),
    (TWO_HOSTS % {"api_1": ""}, ["--method", "unplug"], "--method unplug: use one of stop, freeze, cut"),
])
def test_the_task_refuses_a_drill_it_cannot_run_in_one_line(tmp_path, inventory, flags, needle):
    from conftest import assert_one_error_line, inv

    path = tmp_path / "hosts.yaml"
    path.write_text(inventory)
    done = inv("test.host-failover", "-i", str(path), *flags, check=False, timeout=60)
    assert_one_error_line(done, 2, needle)
