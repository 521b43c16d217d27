"""Placement: each instance's Incus host, the single-host refusals and the per-host deploy floor."""

import pytest

from fabfile.capacity import CapacityFloor
from fabfile.exits import UsageError
from fabfile.inventory import load_inventory
from fabfile.placement import check_placement, host_of, per_host_floor, would_empty_host
from fabfile.values import InvalidValue

POOLS = [("api_pool pool", "backend_api_instances"), ("stream_pool pool", "stream_server_instances")]


def inventory(tmp_path, lb2="incus-2", api3="incus-2", stream3="incus-2", extra=""):
    def remote(value):
        return f"\n          incus_remote: {value}" if value else ""

    text = f"""all:
  vars:
    connection: incus{extra}
  children:
    haproxy:
      hosts:
        haproxy: {{address: 10.0.0.10}}
        haproxy-2:
          address: 10.0.0.11{remote(lb2)}
    backend_api_instances:
      hosts:
        backend-api-1: {{address: 10.0.0.21}}
        backend-api-3:
          address: 10.0.0.23{remote(api3)}
    stream_server_instances:
      hosts:
        stream-server-1: {{address: 10.0.0.31}}
        stream-server-3:
          address: 10.0.0.33{remote(stream3)}
"""
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    return load_inventory(str(path))


def test_each_instance_knows_its_incus_host(tmp_path):
    loaded = inventory(tmp_path)
    assert host_of(loaded.hosts["haproxy"]) == "incus:local"
    assert host_of(loaded.hosts["haproxy-2"]) == "incus:incus-2"


def test_a_split_inventory_passes(tmp_path):
    check_placement(inventory(tmp_path), POOLS)


@pytest.mark.parametrize("moved, label", [
    ({"lb2": None}, "balancer pair (haproxy, haproxy-2)"),
    ({"api3": None}, "api_pool pool (backend-api-1, backend-api-3)"),
    ({"stream3": None}, "stream_pool pool (stream-server-1, stream-server-3)"),
])
def test_a_pair_or_pool_on_one_host_is_refused_in_one_line(tmp_path, moved, label):
    with pytest.raises(UsageError) as caught:
        check_placement(inventory(tmp_path, **moved), POOLS)
    message = str(caught.value)
    assert label in message and "all on Incus host 'local'" in message and "placement_single_host_ok" in message
    assert "\n" not in message


def test_the_override_and_a_single_host_inventory_pass(tmp_path):
    check_placement(inventory(tmp_path, lb2=None, extra="\n    placement_single_host_ok: true"), POOLS)
    (tmp_path / "one").mkdir()
    check_placement(inventory(tmp_path / "one", lb2=None, api3=None, stream3=None), POOLS)


def test_per_host_floor_is_a_count(tmp_path):
    loaded = inventory(tmp_path, extra="\n    deploy_min_up_per_host: 1")
    assert per_host_floor(loaded.group("backend_api_instances")) == 1
    (tmp_path / "bad").mkdir()
    bad = inventory(tmp_path / "bad", extra="\n    deploy_min_up_per_host: many")
    with pytest.raises(InvalidValue, match="deploy_min_up_per_host: 'many' is not a count"):
        per_host_floor(bad.group("backend_api_instances"))


def test_a_batch_never_empties_one_host():
    hosts = {"a1": "incus:local", "a2": "incus:local", "b1": "incus:incus-2", "b2": "incus:incus-2"}
    up = set(hosts)
    plain = CapacityFloor("api_pool", 4, 1)
    per_host = CapacityFloor("api_pool", 4, 1, 1, tuple(hosts.items()))
    # Without the per-host floor a batch of 2 takes b1 and b2: host incus-2 has nothing left UP.
    assert plain.pick(["b1", "b2", "a1", "a2"], up, 2) == ["b1", "b2"]
    assert per_host.pick(["b1", "b2", "a1", "a2"], up, 2) == ["b1"]
    assert per_host.would_break("b2", {"b2", "a1"}) and not plain.would_break("b2", {"b2", "a1"})
    assert not would_empty_host("b2", {"a1"}, hosts, 1)  # not UP: costs nothing


def test_a_per_host_floor_that_pins_a_host_is_refused_before_anything_runs(tmp_path):
    """One api instance per host: a per-host floor of 1 would keep each UP for ever, so the deploy would
    wait for a slot that never comes. Refused when the floor is built, naming the host and its server."""
    pool = inventory(tmp_path, extra="\n    deploy_min_up_per_host: 1").group("backend_api_instances")
    with pytest.raises(InvalidValue) as caught:
        CapacityFloor.of_pool("api_pool", pool).with_hosts(pool)
    message = str(caught.value)
    assert "host 'local'" in message and "(backend-api-1)" in message and "at most 0" in message
    assert "\n" not in message
    (tmp_path / "zero").mkdir()
    pool = inventory(tmp_path / "zero", extra="\n    deploy_min_up_per_host: 0").group("backend_api_instances")
    assert CapacityFloor.of_pool("api_pool", pool).with_hosts(pool).min_up_per_host == 0
