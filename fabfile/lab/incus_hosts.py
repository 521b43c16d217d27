"""Second Incus hosts nested in the lab (``lab_incus_hosts``), reached as Incus remotes over HTTPS.

Each entry (``name``, ``address`` on the lab bridge, ``inner_subnet``) becomes an outer lab container
with ``security.nesting``, Incus from the same apt suite as the lab host's (bookworm-backports on
Debian 12) installed and initialised inside, its API on ``ADDRESS:8443``, trusted through a one-time
token and added on this machine as the remote ``name``; the lab image copied in; a route to the inner
subnet through the outer container. Instances whose ``incus_remote`` is that name are created there.

Two fixes were measured necessary inside the outer container (cgroup v1 host, unprivileged
container): the ``cpu`` and ``cpuacct`` controllers mounted where the inner Incus looks for them
(they are symlinks to an empty ``cpu,cpuacct`` directory there), done by a oneshot unit ordered
before incus so it holds across restarts; and an id range for the inner containers inside the outer
container's own (``/etc/subuid``/``/etc/subgid``).

Instances get their addresses on the lab's own bridge through a macvlan nic on the outer container's
``eth0`` (the inner default profile), so both hosts share one layer-2 segment (VRRP, ARP for the VIP);
the inner bridge on ``inner_subnet`` stays for instances a user puts there (profile ``inner``),
reached through the route.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from dataclasses import dataclass, field

from ..shell import q
from .base import APT_TIMEOUT, INCUS, STORAGE_POOL, LabError, Progress, run
from .host_packages import parse_one_line_sources

HTTPS_PORT = 8443
NESTED_SUBID = "root:1000000:999000000"
INNER_BRIDGE = "incusbr0"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,62}")


@dataclass
class LabMachine:
    """A lab container that is not an inventory host (the outer container of an Incus host)."""

    name: str
    address: str
    vars: dict = field(default_factory=dict)


@dataclass
class IncusHost:
    name: str  # the outer container's name and the remote's name on this machine
    address: str
    inner_subnet: ipaddress.IPv4Network
    instances: list  # inventory hosts whose incus_remote is this host

    @property
    def inner_gateway(self) -> str:
        return str(self.inner_subnet.network_address + 1)

    @property
    def machine(self) -> LabMachine:
        return LabMachine(self.name, self.address, {"incus_name": self.name})


def load_incus_hosts(inventory, subnet) -> list:
    """``lab_incus_hosts`` from the inventory, checked; each with the instances that name it as remote."""
    entries = next(iter(inventory.hosts.values())).vars.get("lab_incus_hosts") or []
    where = f"{inventory.path}: lab_incus_hosts"
    if not isinstance(entries, list):
        raise LabError(f"{where} must be a list of {{name, address, inner_subnet}}")
    hosts = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"name", "address", "inner_subnet"}:
            raise LabError(f"{where}[{index}] must have exactly name, address and inner_subnet")
        name = str(entry["name"])
        if not _NAME.fullmatch(name) or name == "local":
            raise LabError(f"{where}[{index}]: name {name!r} must be an Incus name (letters, digits, '-') other than local")
        try:
            address = ipaddress.ip_address(str(entry["address"]))
            inner = ipaddress.ip_network(str(entry["inner_subnet"]))
        except ValueError as exc:
            raise LabError(f"{where}[{index}] ({name}): {exc}") from None
        if address not in subnet:
            raise LabError(f"{where}[{index}] ({name}): address {address} must be on the lab bridge's {subnet}")
        if inner.overlaps(subnet):
            raise LabError(f"{where}[{index}] ({name}): inner_subnet {inner} overlaps lab_subnet {subnet}")
        instances = [host for host in inventory.hosts.values()
                     if host.connection == "incus" and host.vars.get("incus_remote") == name]
        hosts.append(IncusHost(name, str(address), inner, instances))
    return hosts


def exec_script(name: str, script: str, timeout: float = 120):
    return INCUS.run("exec", "--", name, "sh", "-c", script, timeout=timeout)


def changes(output: str) -> list:
    return [line[len("CHANGED "):] for line in output.splitlines() if line.startswith("CHANGED ")]


# Mounts the cgroup v1 cpu and cpuacct controllers where the inner Incus (liblxc) opens them.
CGROUP_FIX = """#!/bin/sh
# Installed by veza ops `inv lab.up`: this outer container sees /sys/fs/cgroup/cpu and cpuacct as
# symlinks to an empty cpu,cpuacct directory; liblxc then fails ("Failed to open 9/cpuacct").
# The tmpfs holding them is read-only: opened for the change, read-only again after.
set -e
mountpoint -q /sys/fs/cgroup/cpu && mountpoint -q /sys/fs/cgroup/cpuacct && exit 0
mount -o remount,rw /sys/fs/cgroup
for controller in cpu cpuacct; do
    path=/sys/fs/cgroup/$controller
    mountpoint -q "$path" && continue
    if [ -L "$path" ]; then rm -f "$path"; fi
    mkdir -p "$path"
    mount -t cgroup -o "$controller" cgroup "$path"
done
mount -o remount,ro /sys/fs/cgroup
"""

CGROUP_UNIT = """[Unit]
Description=cgroup v1 cpu and cpuacct for the nested Incus (veza lab)
DefaultDependencies=no
Before=incus.service incus.socket incus-startup.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/veza-nested-cgroups
[Install]
WantedBy=sysinit.target
"""


def put_file_script(path: str, text: str, mode: str) -> str:
    """Shell that writes ``text`` to ``path`` only when it differs (prints CHANGED path)."""
    return (f"if [ \"$(cat {q(path)} 2>/dev/null)\" != {q(text.rstrip(chr(10)))} ]; then "
            f"printf '%s\\n' {q(text.rstrip(chr(10)))} > {q(path)}.new && chmod {mode} {q(path)}.new && "
            f"mv {q(path)}.new {q(path)} && echo CHANGED {q(path)}; fi")


def backports_source(name: str) -> str | None:
    """A deb822 stanza for bookworm-backports on the mirror the outer container already uses (None: not needed)."""
    listing = exec_script(name, "cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null; "
                                ". /etc/os-release; echo CODENAME=$VERSION_CODENAME").stdout
    codename = next((line.split("=", 1)[1] for line in listing.splitlines() if line.startswith("CODENAME=")), "")
    if codename != "bookworm":
        return None
    mirror = next((s for s in parse_one_line_sources(listing) if codename in s.suites and "main" in s.components), None)
    if mirror is None:
        raise LabError(f"{name}: no '{codename} main' apt source inside the container to derive backports from")
    return (f"Types: deb\nURIs: {mirror.uris[0]}\nSuites: {codename}-backports\nComponents: main\n")


def ensure_incus_inside(host: IncusHost):
    """Incus installed in the outer container, the two fixes in place, pool, bridges, profiles, HTTPS."""
    done = []
    source = backports_source(host.name)
    steps = [
        put_file_script("/etc/subuid", NESTED_SUBID, "0644"),
        put_file_script("/etc/subgid", NESTED_SUBID, "0644"),
        put_file_script("/usr/local/sbin/veza-nested-cgroups", CGROUP_FIX, "0755"),
        put_file_script("/etc/systemd/system/veza-nested-cgroups.service", CGROUP_UNIT, "0644"),
        "systemctl is-enabled -q veza-nested-cgroups || { systemctl daemon-reload; "
        "systemctl enable -q veza-nested-cgroups; echo CHANGED enabled veza-nested-cgroups; }",
        "systemctl is-active -q veza-nested-cgroups || { systemctl daemon-reload; systemctl start veza-nested-cgroups; }",
    ]
    if source:
        steps.append(put_file_script("/etc/apt/sources.list.d/veza-lab-backports.sources", source, "0644"))
    output = exec_script(host.name, "set -e\n" + "\n".join(steps)).stdout
    done += changes(output)
    if any("subuid" in line or "subgid" in line for line in done):
        exec_script(host.name, "! systemctl is-active -q incus || systemctl restart incus", timeout=120)
    target = "-t bookworm-backports" if source else ""
    install = exec_script(host.name, (
        "export DEBIAN_FRONTEND=noninteractive; command -v incus >/dev/null && exit 0; "
        f"apt-get -q update >/dev/null && apt-get -q install -y --no-install-recommends {target} incus dnsmasq-base "
        ">/tmp/veza-incus-install.log 2>&1 || { tail -5 /tmp/veza-incus-install.log; exit 1; }; echo CHANGED installed incus"
    ), timeout=APT_TIMEOUT)
    done += changes(install.stdout)
    init = exec_script(host.name, "set -e\n" + "\n".join([
        "incus admin waitready --timeout 60",
        f"incus storage show {STORAGE_POOL} >/dev/null 2>&1 || {{ incus storage create {STORAGE_POOL} dir >/dev/null; "
        "echo CHANGED storage pool; }",
        f"incus network show {INNER_BRIDGE} >/dev/null 2>&1 || {{ incus network create {INNER_BRIDGE} "
        f"ipv4.address={host.inner_gateway}/{host.inner_subnet.prefixlen} ipv4.nat=true ipv6.address=none >/dev/null; "
        f"echo CHANGED bridge {host.inner_subnet}; }}",
        # Instances on the lab's own layer 2: a macvlan on the outer container's eth0.
        f"incus profile device show default | grep -q '^root:' || {{ incus profile device add default root disk path=/ "
        f"pool={STORAGE_POOL} >/dev/null; echo CHANGED root disk; }}",
        "incus profile device show default | grep -q '^eth0:' || { incus profile device add default eth0 nic "
        "nictype=macvlan parent=eth0 name=eth0 >/dev/null; echo CHANGED macvlan nic; }",
        "incus profile show inner >/dev/null 2>&1 || { incus profile create inner >/dev/null; "
        f"incus profile device add inner eth0 nic network={INNER_BRIDGE} name=eth0 >/dev/null; echo CHANGED profile inner; }}",
        f"[ \"$(incus config get core.https_address)\" = {q(f'{host.address}:{HTTPS_PORT}')} ] || "
        f"{{ incus config set core.https_address={q(f'{host.address}:{HTTPS_PORT}')}; echo CHANGED https; }}",
    ]), timeout=120)
    done += changes(init.stdout)
    return bool(done), ", ".join(done) or f"incus on {host.address}:{HTTPS_PORT}"


def remote_answers(name: str) -> bool:
    return INCUS.run("query", "--", f"{name}:/1.0/instances", check=False, timeout=20).ok


def ensure_remote(host: IncusHost):
    """This machine's client certificate trusted by the inner Incus, and the remote added under ``name``."""
    check_lab_route(host.address)
    remotes = INCUS.json("remote", "list")
    ours = remotes.get(host.name)
    wanted = f"https://{host.address}:{HTTPS_PORT}"
    if ours is not None and ours.get("Addr") == wanted and remote_answers(host.name):
        return False, f"{host.name} {wanted}"
    if ours is not None:
        INCUS.run("remote", "remove", host.name)
    token = exec_script(host.name, "incus config trust add --quiet veza-workstation-$(date +%s)").stdout.strip()
    INCUS.run("remote", "add", host.name, token, "--accept-certificate", timeout=60)
    if not remote_answers(host.name):
        raise LabError(f"remote {host.name} added but {wanted} does not answer with this machine's certificate")
    return True, f"added remote {host.name} {wanted} (trust token)"


def ensure_remote_image(host: IncusHost, image: str):
    """The lab image copied to the remote under the same alias (fingerprint kept)."""
    listed = INCUS.json("image", "list", f"{host.name}:")
    if any(alias.get("name") == image for entry in listed for alias in entry.get("aliases") or []):
        return False, f"{host.name}:{image}"
    INCUS.run("image", "copy", "--mode", "push", f"local:{image}", f"{host.name}:", "--alias", image, timeout=600)
    return True, f"copied {image} to {host.name}"


def check_lab_route(address: str, network: str | None = None) -> None:
    """Refuse to send anything to ``address`` unless the kernel routes it through a lab bridge.

    Without a route, a lab address leaves through the default route and may be answered by something
    that is not ours."""
    done = run(["ip", "-json", "route", "get", address], check=False, timeout=10)
    try:
        device = json.loads(done.stdout)[0].get("dev", "")
    except (ValueError, IndexError):
        device = ""
    if network is not None and device != network or device == "" or not _is_incus_bridge(device):
        raise LabError(f"{address} is routed through '{device or '?'}', not the lab bridge"
                       f"{' ' + network if network else ''}; refusing to send traffic there (add the lab route: inv lab.up)")


def _is_incus_bridge(device: str) -> bool:
    networks = INCUS.json("network", "list")
    return any(net["name"] == device and net.get("managed") for net in networks)


def ensure_route(host: IncusHost, network: str):
    """``inner_subnet via ADDRESS dev LAB_BRIDGE`` on this machine; the check proves where it goes."""
    wanted = f"{host.inner_subnet} via {host.address} dev {network}"
    current = run(["ip", "route", "show", str(host.inner_subnet)], check=False, timeout=10).stdout.split()
    if current[:5] == wanted.split():
        check_lab_route(host.inner_gateway, network)
        return False, wanted
    run(["ip", "route", "replace", *wanted.split()], timeout=10)
    check_lab_route(host.inner_gateway, network)
    return True, f"added {wanted}"


def remote_instances(host: IncusHost) -> dict:
    return {instance["name"]: instance for instance in INCUS.json("list", f"{host.name}:")}


def ensure_incus_host(settings, host: IncusHost, progress: Progress) -> list:
    """The outer container, Incus inside, remote, image, route, then the instances placed there."""
    from .containers import ensure_container, list_instances
    from .settings import instance_name

    started = time.monotonic()
    outer = ensure_container(settings, host.machine, list_instances().get(host.name),
                             extra_config={"security.nesting": "true"})
    progress.record(f"incus host {host.name}", outer.changed, time.monotonic() - started, outer.detail)
    progress.phase(f"incus on {host.name}", ensure_incus_inside, host)
    progress.phase(f"remote {host.name}", ensure_remote, host)
    progress.phase(f"image on {host.name}", ensure_remote_image, host, settings.image)
    progress.phase(f"route to {host.inner_subnet}", ensure_route, host, settings.network)
    existing = remote_instances(host)
    results = [outer]
    for instance in host.instances:
        started = time.monotonic()
        name = instance_name(instance)
        result = ensure_container(settings, instance, existing.get(name), ref=f"{host.name}:{name}", nic_args=[])
        progress.record(f"container {result.name}", result.changed, time.monotonic() - started, result.detail)
        results.append(result)
    return results


def incus_host_rows(settings) -> list:
    """(container, state, address) of each nested Incus host and each instance on it, for lab.status."""
    rows = []
    for host in settings.incus_hosts:
        outer = INCUS.query(f"/1.0/instances/{host.name}/state")
        state = (outer or {}).get("status", "MISSING").upper() if outer else "MISSING"
        rows.append((host.name, f"{state} (incus host)", host.address if state == "RUNNING" else "-"))
        answers = state == "RUNNING" and remote_answers(host.name)
        listed = remote_instances(host) if answers else {}
        from .settings import instance_name

        for instance in host.instances:
            name = instance_name(instance)
            found = listed.get(name)
            status = "UNREACHABLE" if not answers else ("MISSING" if found is None else found["status"].upper())
            rows.append((f"{host.name}:{name}", status, instance.address if status == "RUNNING" else "-"))
    return rows


def remove_incus_host(settings, host: IncusHost) -> list:
    """Delete the outer container (and everything in it), the remote and the route."""
    removed = []
    if host.name in INCUS.json("remote", "list"):
        INCUS.run("remote", "remove", host.name)
        removed.append(f"remote {host.name}")
    if run(["ip", "route", "show", str(host.inner_subnet)], check=False, timeout=10).stdout.strip():
        run(["ip", "route", "del", str(host.inner_subnet)], check=False, timeout=10)
        removed.append(f"route {host.inner_subnet}")
    if INCUS.query(f"/1.0/instances/{host.name}") is not None:
        INCUS.run("delete", "--force", "--", host.name, timeout=180)
        removed.append(f"incus host {host.name}")
    return removed
