"""The lab's settings from the inventory: bridge, subnet, image, secrets file, the hosts that are containers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from ..inventory import load_inventory
from ..paths import resolve as resolve_path
from .base import LabError


@dataclass
class LabSettings:
    network: str
    subnet: ipaddress.IPv4Network
    image: str
    secrets_file: Path
    hosts: list  # inventory hosts that live in the lab
    incus_hosts: list = field(default_factory=list)  # nested Incus hosts (lab_incus_hosts), see incus_hosts.py

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)


def load_settings(inventory_path: str) -> LabSettings:
    """The lab's variables (from ``all.vars``) and the hosts that are Incus containers on this machine."""
    inventory = load_inventory(str(resolve_path(inventory_path)))
    hosts = [
        host for host in inventory.hosts.values()
        if host.connection == "incus" and host.vars.get("incus_remote", "local") == "local"
    ]
    if not hosts:
        raise LabError(f"{inventory.path}: no host uses the incus connection on the local remote; nothing to build")
    shared = hosts[0].vars
    missing = [name for name in ("lab_network", "lab_subnet", "lab_image", "secrets_file") if not shared.get(name)]
    if missing:
        raise LabError(f"{inventory.path}: set {', '.join(missing)} under all.vars")
    try:
        subnet = ipaddress.ip_network(shared["lab_subnet"])
    except ValueError:
        raise LabError(f"{inventory.path}: lab_subnet '{shared['lab_subnet']}' is not a network like 10.1.2.0/24") from None
    from .incus_hosts import load_incus_hosts

    incus_hosts = load_incus_hosts(inventory, subnet)
    for host in hosts + [host for incus_host in incus_hosts for host in incus_host.instances]:
        check_host_address(inventory.path, host, subnet)
    return LabSettings(shared["lab_network"], subnet, shared["lab_image"], resolve_path(shared["secrets_file"]), hosts,
                       incus_hosts)


def check_host_address(path: str, host, subnet) -> None:
    """Each container gets its inventory address statically, so it must sit inside lab_subnet."""
    if not host.address:
        raise LabError(f"{path}: host '{host.name}' has no address; the lab gives each container its own")
    try:
        address = ipaddress.ip_address(host.address)
    except ValueError:
        raise LabError(f"{path}: host '{host.name}' address '{host.address}' is not an IPv4 address") from None
    if address not in subnet or address in (subnet.network_address, subnet.network_address + 1, subnet.broadcast_address):
        raise LabError(f"{path}: host '{host.name}' address {address} must be a host address of {subnet} other than .1")


def instance_name(host) -> str:
    return host.vars.get("incus_name", host.name)
