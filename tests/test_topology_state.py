"""The shared models the engines stand on: HAProxy's server states and pool view, the capacity floor,
and the topology (lock and audit always on one balancer, elected once)."""

import textwrap

import pytest

from fabfile.capacity import CapacityFloor
from fabfile.haproxy_state import PoolView, ServerStat, rank, transitional
from fabfile.inventory import load_inventory
from fabfile.process import Result
from fabfile.topology import Topology
from fabfile.values import InvalidValue


def row(server, status, pool="api_pool"):
    return ServerStat(pool, server, status, 1, 0, "L7OK")


@pytest.mark.parametrize("status, moving", [
    ("UP", False), ("DOWN", False), ("MAINT", False), ("DRAIN", False), ("no check", False),
    ("MAINT (via api_pool/x)", False), ("UP 1/3", True), ("DOWN 1/2", True), ("NOLB 1/3", True), ("NOLB", True)])
def test_transitional_is_defined_once_for_every_reader(status, moving):
    assert transitional(status) is moving
    assert row("x", status).is_transitional is moving


def test_rank_orders_what_two_balancers_may_disagree_on():
    order = ["MAINT", "DOWN", "DOWN 1/2", "UP 1/3", "NOLB", "DRAIN", "no check", "UP"]
    assert [rank(s) for s in order] == sorted(rank(s) for s in order)
    assert rank("SOMETHING NEW") == 0  # unknown wording counts as the worst


def test_pool_view_filters_one_pool_once_and_answers_by_name():
    view = PoolView("api_pool", [row("a", "UP"), row("b", "DOWN 1/2"), row("s", "UP", pool="stream_pool"),
                                 ServerStat("api_pool", "BACKEND", "UP", 2, 0, "")])
    assert view.names == ["a", "b"] and view.up == {"a"}
    assert view.status("b") == "DOWN 1/2" and view.status("zz", "-") == "-"
    assert not view.settled() and view.settled(ignore=["b"])
    assert [s.server for s in view.not_up()] == ["b"]
    assert row("m", "MAINT (via x)").admin_out == "MAINT" and row("u", "UP").admin_out == ""


def test_capacity_floor_counts_only_up_servers():
    floor = CapacityFloor.parse("api_pool", "50%", 4)
    assert (floor.min_up, floor.out_at_once, floor.restart_slots) == (2, 2, 2)
    assert not floor.would_break("a", {"a", "b", "c"}) and floor.would_break("a", {"a", "b"})
    assert not floor.would_break("d", {"a", "b"})  # not UP: costs nothing
    assert floor.pick(["a", "b", "c"], {"a", "b", "c", "d"}, batch=3) == ["a", "b"]
    assert CapacityFloor.parse("p", 1, 1).restart_slots == 1  # a pool of one still restarts
    with pytest.raises(InvalidValue, match="keeps all 4 servers of api_pool UP"):
        CapacityFloor.parse("api_pool", 4, 4)


def write(tmp_path, text):
    path = tmp_path / "hosts.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_the_floor_is_read_from_the_whole_pool_and_must_agree(tmp_path):
    loaded = load_inventory(write(tmp_path, """
        all:
          children:
            backend_api_instances:
              vars: {deploy_min_up: 2}
              hosts:
                a: {connection: local}
                b: {connection: local}
                c: {connection: local, deploy_min_up: 1}
                d: {connection: local}
        """))
    pool = loaded.group("backend_api_instances")
    with pytest.raises(InvalidValue, match="hosts of api_pool disagree .*2 on a, b, d; 1 on c"):
        CapacityFloor.of_pool("api_pool", pool)
    agreeing = [h for h in pool if h.name != "c"]
    assert CapacityFloor.of_pool("api_pool", agreeing) == CapacityFloor("api_pool", 3, 2)


class Answers:
    """A transport that answers ``true`` (or not) and counts the calls."""

    def __init__(self, name, up, calls):
        self.name, self.up, self.calls = name, up, calls

    def run(self, command, warn=False, **_):
        self.calls.append(self.name)
        return Result(str(command), 0 if self.up else 255, "", "")


def test_lock_and_audit_share_one_control_host_elected_once(tmp_path, monkeypatch):
    loaded = load_inventory(write(tmp_path, """
        all:
          children:
            haproxy:
              hosts:
                lb1: {connection: local, address: 10.9.0.10}
                lb2: {connection: local, address: 10.9.0.11}
        """))
    calls = []
    topology = Topology.of(loaded)
    monkeypatch.setattr(topology, "transport", lambda host: Answers(host.name, host.name == "lb2", calls))
    assert topology.control_host().name == "lb2" and calls == ["lb1", "lb2"]
    assert topology.control_host().name == "lb2" and calls == ["lb1", "lb2"]  # decided once per task
    assert [h.name for h in topology.balancers] == ["lb1", "lb2"] and topology.pair is None
    assert topology.client_address() == "10.9.0.10"
