"""The balancer pair behind a keepalived VIP: its settings, checked, and the commands that read its state.

Pure (imports only ``shell`` and ``values``): what ``keepalived.setup``, ``lb.status`` and
``test.lb-failover`` need to know about the pair, computed from the balancer group.

An inventory turns the pair on by setting ``lb_vip`` on the ``haproxy`` group (or all);
without it nothing here applies and one balancer works exactly as before. With it:

- the group holds exactly two balancers, each with an IPv4 ``address`` (the VRRP
  unicast source and peer: no multicast);
- ``lb_vip`` is an address of the balancers' subnet (``lab_subnet`` when set, else
  the first balancer's address with ``lb_vip_prefix``), not its network or broadcast
  address and no inventory host's address;
- the first balancer in inventory order gets ``lb_vrrp_priority`` and the second
  that minus ``lb_vrrp_priority_step``: with preemption off both start BACKUP and the
  first one up takes the VIP.

Refusals raise ``InvalidValue`` (one line, exit 2, nothing touched).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from . import values
from .shell import Command, q

DEFAULTS = {
    "lb_vip": "",
    # Used only when the inventory has no lab_subnet: the VIP's prefix length on the balancers' network.
    "lb_vip_prefix": 24,
    "lb_vrrp_interface": "eth0",
    "lb_vrrp_router_id": 51,
    # VRRPv3 (RFC 5798): advert intervals in centiseconds, so sub-second values work (v2: whole seconds).
    "lb_vrrp_version": 3,
    # The backup declares the master dead after 3 missed adverts + skew ((256 - priority) / 256 of an
    # advert): 0.3 s -> about 1.1 s after the last advert, so the VIP moves within about 1 s of a
    # container's death (README: Balancer pair). 60 s of full CPU load on the 2-core lab host caused no
    # state change at 0.3 s (make bench-lb); 1 s took 2.5-3 s to move and failed 30 new-connection requests.
    "lb_vrrp_advert_interval": 0.3,
    "lb_vrrp_priority": 150,
    "lb_vrrp_priority_step": 50,
    # Off: a node that comes back stays BACKUP; the VIP moves back zero times (no flapping, one
    # fewer cut for clients). On: it moves back once, lb_vrrp_preempt_delay seconds after the
    # returning node's own checks pass.
    "lb_vrrp_preempt": False,
    "lb_vrrp_preempt_delay": 10,
    # vrrp_track_process needs the kernel's process events, which keepalived cannot listen to inside
    # a container ("Failed to set/clear process event listen"): there it never sees haproxy start
    # after a boot and keeps the node in FAULT. Off by default; turn it on for VMs and bare metal.
    # The haproxy unit's own start/stop, through vrrp track_file, covers a death everywhere.
    "lb_track_process": False,
    # haproxy may have no process for this long before the node goes FAULT. A reload never gets
    # there (the master re-executes in place and the old worker lingers); a restart might.
    "lb_track_process_delay": 0.5,
    # The local frontend must answer HTTP (any status: a 503 with every backend down is still an
    # answering balancer, and faulting both nodes then would drop the VIP for nothing).
    "lb_check_interval": 1,
    "lb_check_timeout": 1,
    "lb_check_fall": 2,
    "lb_check_rise": 2,
    "lb_script_user": "keepalived_script",
    # The secrets file entry holding the VRRP password (VRRPv2 PASS authentication, 1-8 characters).
    "lb_vrrp_password_secret": "vrrp_password",
}

KEEPALIVED_CONFIG = "/etc/keepalived/keepalived.conf"
JSON_DUMP = "/tmp/keepalived.json"
PID_FILE = "/run/keepalived.pid"
MAX_BALANCERS = 2


@dataclass(frozen=True)
class PairNode:
    name: str
    address: str
    priority: int
    peer: str  # the other node's address


@dataclass(frozen=True)
class Pair:
    vip: str
    prefix: int
    interface: str
    router_id: int
    version: int
    advert_interval: float
    preempt: bool
    preempt_delay: float
    track_process: bool
    track_process_delay: float
    check_interval: int
    check_timeout: int
    check_fall: int
    check_rise: int
    script_user: str
    password_secret: str
    nodes: tuple  # PairNode, inventory order

    def node(self, name: str) -> PairNode:
        return next(node for node in self.nodes if node.name == name)


def check_group_size(group: str, hosts) -> None:
    """At most two balancers: VRRP with unicast peers is written for a pair."""
    if len(hosts) > MAX_BALANCERS:
        raise values.InvalidValue(
            f"group '{group}' has {len(hosts)} balancers ({', '.join(h.name for h in hosts)}); "
            f"at most {MAX_BALANCERS} are supported (a keepalived pair): remove the extra ones")


def vip_of(balancers) -> str:
    """``lb_vip`` as the balancers see it ('' when unset); both must see the same value."""
    seen = {str(b.vars.get("lb_vip") or "") for b in balancers}
    if len(seen) > 1:
        raise values.InvalidValue(f"lb_vip differs between balancers ({', '.join(sorted(seen))}); "
                                  "set it once on the haproxy group")
    return seen.pop() if seen else ""


def pair_settings(group: str, balancers, all_hosts) -> Pair | None:
    """The checked pair, or None when the inventory has no ``lb_vip`` (one balancer, no keepalived)."""
    check_group_size(group, balancers)
    vip_text = vip_of(balancers)
    if not vip_text:
        return None
    v = {**DEFAULTS, **balancers[0].vars}
    if len(balancers) != MAX_BALANCERS:
        raise values.InvalidValue(f"lb_vip {vip_text}: needs two balancers in group '{group}' (found "
                                  f"{len(balancers)}); add the second one or remove lb_vip")
    try:
        vip = ipaddress.IPv4Address(vip_text)
    except ValueError:
        raise values.InvalidValue(f"lb_vip: {vip_text[:60]!r} is not an IPv4 address") from None
    addresses = []
    for balancer in balancers:
        try:
            addresses.append(ipaddress.IPv4Address(str(balancer.address or "")))
        except ValueError:
            raise values.InvalidValue(f"balancer '{balancer.name}': address {str(balancer.address)[:60]!r} is not an "
                                      "IPv4 address; VRRP unicast peers need one") from None
    prefix = values.integer("lb_vip_prefix", v["lb_vip_prefix"], 8, 30)
    if v.get("lab_subnet"):
        subnet = ipaddress.ip_network(str(v["lab_subnet"]), strict=False)
        where = f"lab_subnet {subnet}"
    else:
        subnet = ipaddress.ip_network(f"{addresses[0]}/{prefix}", strict=False)
        where = f"{subnet} (balancer {balancers[0].name}'s address with lb_vip_prefix {prefix})"
    if vip not in subnet or vip in (subnet.network_address, subnet.broadcast_address):
        raise values.InvalidValue(f"lb_vip {vip}: not a host address of {where}; pick a free address inside it")
    for host in all_hosts:
        if str(host.address or "") == str(vip):
            raise values.InvalidValue(f"lb_vip {vip}: is the address of host '{host.name}'; pick a free address")
    for balancer, address in zip(balancers, addresses):
        if address not in subnet:
            raise values.InvalidValue(f"balancer '{balancer.name}': address {address} is outside {where}, "
                                      "where lb_vip lives; both balancers and the VIP share one network")
    version = int(values.one_of("lb_vrrp_version", int(v["lb_vrrp_version"]) if str(v["lb_vrrp_version"]).isdigit()
                                else v["lb_vrrp_version"], (2, 3)))
    advert = values.seconds("lb_vrrp_advert_interval", v["lb_vrrp_advert_interval"], 0.01, 255)
    if version == 2 and advert != int(advert):
        raise values.InvalidValue(f"lb_vrrp_advert_interval: {advert:g}s needs lb_vrrp_version 3 "
                                  "(VRRPv2 adverts are whole seconds: set lb_vrrp_advert_interval: 1 with it)")
    top = values.integer("lb_vrrp_priority", v["lb_vrrp_priority"], 2, 254)
    step = values.integer("lb_vrrp_priority_step", v["lb_vrrp_priority_step"], 1, 252)
    if top - step < 1:
        raise values.InvalidValue(f"lb_vrrp_priority_step: {step} leaves the second balancer below priority 1")
    nodes = tuple(PairNode(b.name, str(a), top - i * step, str(addresses[1 - i]))
                  for i, (b, a) in enumerate(zip(balancers, addresses)))
    preempt, track_process = v["lb_vrrp_preempt"], v["lb_track_process"]
    for name, flag in (("lb_vrrp_preempt", preempt), ("lb_track_process", track_process)):
        if not isinstance(flag, bool):
            raise values.InvalidValue(f"{name}: {flag!r} is not true or false")
    return Pair(
        vip=str(vip), prefix=subnet.prefixlen if v.get("lab_subnet") else prefix,
        interface=values.token("lb_vrrp_interface", v["lb_vrrp_interface"]),
        router_id=values.integer("lb_vrrp_router_id", v["lb_vrrp_router_id"], 1, 255),
        version=version, advert_interval=advert, preempt=preempt,
        preempt_delay=values.seconds("lb_vrrp_preempt_delay", v["lb_vrrp_preempt_delay"], 0, 1000),
        track_process=track_process,
        track_process_delay=values.seconds("lb_track_process_delay", v["lb_track_process_delay"], 0.1, 60),
        # keepalived 2.2.7 takes whole seconds for a vrrp_script's interval and timeout.
        check_interval=values.integer("lb_check_interval", v["lb_check_interval"], 1, 60),
        check_timeout=values.integer("lb_check_timeout", v["lb_check_timeout"], 1, 60),
        check_fall=values.integer("lb_check_fall", v["lb_check_fall"], 1, 10),
        check_rise=values.integer("lb_check_rise", v["lb_check_rise"], 1, 10),
        script_user=values.user_name("lb_script_user", v["lb_script_user"]),
        password_secret=values.token("lb_vrrp_password_secret", v["lb_vrrp_password_secret"]),
        nodes=nodes,
    )


def vrrp_password(pair: Pair, secrets) -> str:
    """The VRRP password from the secrets file: 1-8 plain characters (VRRP PASS carries 8 bytes)."""
    password = secrets.get(pair.password_secret) if secrets is not None else None
    if not password:
        raise values.InvalidValue(f"secret '{pair.password_secret}' (the VRRP password) is missing from "
                                  f"{getattr(secrets, 'path', 'the secrets file')}; add 1-8 characters [A-Za-z0-9_.-]")
    if len(password) > 8 or not all(ch.isalnum() or ch in "_.-" for ch in password) or not password.isascii():
        raise values.InvalidValue(f"secret '{pair.password_secret}': must be 1-8 characters [A-Za-z0-9_.-] "
                                  "(VRRP authentication carries 8 bytes)")
    return password


# -- commands that read the pair's state (run on each balancer) --------------------------

def node_state() -> Command:
    """One round trip: VIP lines on the interface, keepalived's JSON dump, haproxy's unit state.

    ``keepalived --signum=JSON`` names the signal that makes it write ``/tmp/keepalived.json``
    (VRRP state, effective priority per instance); the file is removed first so a stale one
    is never read, and waited for up to 1 s.
    """
    return Command(
        "echo '--addr'; ip -4 -o addr show 2>/dev/null; echo '--json'; "
        f"pid=$(cat {PID_FILE} 2>/dev/null); "
        f"if [ -n \"$pid\" ] && kill -0 \"$pid\" 2>/dev/null; then rm -f {JSON_DUMP}; "
        f"kill -s $(keepalived --signum=JSON) \"$pid\"; for i in $(seq 1 20); do [ -s {JSON_DUMP} ] && break; "
        f"sleep 0.05; done; sleep 0.05; cat {JSON_DUMP} 2>/dev/null; fi; echo; "
        "echo '--units'; systemctl is-active keepalived haproxy 2>/dev/null; true",
        timeout=15)


STATES = {0: "INIT", 1: "BACKUP", 2: "MASTER", 3: "FAULT"}


def parse_node_state(stdout: str, vip: str) -> dict:
    """``{"holds_vip", "vrrp_state", "priority", "effective_priority", "keepalived", "haproxy"}``."""
    import json

    sections, current = {}, None
    for line in stdout.splitlines():
        if line in ("--addr", "--json", "--units"):
            current = line[2:]
            sections[current] = []
        elif current:
            sections[current].append(line)
    holds = any(f" {vip}/" in line for line in sections.get("addr", []))
    state = {"holds_vip": holds, "vrrp_state": "-", "priority": None, "effective_priority": None}
    try:
        dump = json.loads("\n".join(sections.get("json", [])).strip() or "[]")
    except ValueError:
        dump = []
    for instance in dump if isinstance(dump, list) else []:
        data = instance.get("data", {}) if isinstance(instance, dict) else {}
        state["vrrp_state"] = STATES.get(data.get("state"), str(data.get("state", "-")))
        state["priority"] = data.get("base_priority")
        state["effective_priority"] = data.get("effective_priority")
        break
    units = sections.get("units", []) + ["unknown", "unknown"]
    state["keepalived"], state["haproxy"] = units[0].strip() or "unknown", units[1].strip() or "unknown"
    return state


def vip_sampler(interface: str, seconds: float, interval: float = 0.1) -> Command:
    """A bounded loop printing ``<epoch seconds> <addresses of interface>`` every ``interval``.

    One ``incus exec``/ssh session samples for ``seconds`` (exec costs ~70 ms, too slow per
    sample); the reader timestamps lines itself as they arrive.
    """
    count = max(1, int(seconds / interval))
    return Command(
        f"i=0; while [ $i -lt {count} ]; do i=$((i+1)); "
        f"echo \"$(date +%s.%N) $(ip -4 -o addr show dev {q(interface)} | awk '{{print $4}}' | tr '\\n' ' ')\"; "
        f"sleep {interval:g}; done", timeout=seconds + 30)
