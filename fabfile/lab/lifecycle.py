"""The three entry points: ``lab_up``, ``lab_status``, ``lab_down`` (the tasks are in tasks/lab.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .base import INCUS, KNOWN_HOSTS, ROLE_SERVICES, SSH_KEY, STORAGE_POOL, LabError, LabReport, Progress, display_path, require_root
from .containers import ensure_containers, ensure_known_hosts, forget_known_hosts, list_instances
from .host_packages import ensure_packages, host_codename
from .image import ensure_image, image_exists
from .incus_hosts import ensure_incus_host, incus_host_rows, remove_incus_host
from .incus_setup import ensure_daemon, ensure_inotify_limits, ensure_default_profile, ensure_network, ensure_storage_pool
from .local_files import ensure_secrets, ensure_ssh_key
from .settings import LabSettings, instance_name, load_settings


def lab_up(inventory_path: str = "hosts.yaml") -> LabReport:
    """Bring the lab up from whatever state the machine is in; idempotent."""
    require_root("up")
    settings = load_settings(inventory_path)
    codename = host_codename()
    progress = Progress()
    print(f"lab.up: {len(settings.hosts)} containers on {settings.network} {settings.subnet}", flush=True)
    progress.phase("packages", ensure_packages, codename)
    progress.phase("inotify limits", ensure_inotify_limits)
    progress.phase("incus daemon", ensure_daemon)
    progress.phase("storage pool", ensure_storage_pool)
    progress.phase("network", ensure_network, settings)
    progress.phase("default profile", ensure_default_profile, settings)
    progress.phase("ssh key", ensure_ssh_key)
    progress.phase("secrets", ensure_secrets, settings.secrets_file)
    progress.phase("base image", ensure_image, settings, codename)
    results = ensure_containers(settings, progress)
    for incus_host in settings.incus_hosts:
        results += ensure_incus_host(settings, incus_host, progress)
    progress.phase("known_hosts", ensure_known_hosts, results)
    report = progress.report
    total = time.monotonic() - progress.started
    print(
        f"lab.up: {len(results)} containers running; {len(report.changed)} changed, "
        f"{len(report.steps) - len(report.changed)} ok in {total:.1f}s\n"
        f"  ssh: ssh -i {display_path(SSH_KEY)} -o UserKnownHostsFile={display_path(KNOWN_HOSTS)} "
        f"root@{settings.hosts[0].address}",
        flush=True,
    )
    return report


@dataclass
class ContainerStatus:
    name: str
    state: str
    address: str
    services: dict  # service -> systemctl is-active answer


def running_address(instance: dict) -> str:
    network = (instance.get("state") or {}).get("network") or {}
    for address in (network.get("eth0") or {}).get("addresses", []):
        if address.get("family") == "inet":
            return address["address"]
    return "-"


def service_states(name: str) -> dict:
    done = INCUS.run("exec", "--", name, "systemctl", "is-active", *ROLE_SERVICES, check=False, timeout=30)
    answers = done.stdout.split()
    if len(answers) != len(ROLE_SERVICES):
        return {service: "?" for service in ROLE_SERVICES}
    return dict(zip(ROLE_SERVICES, answers))


def lab_status(inventory_path: str = "hosts.yaml") -> list:
    """One row per lab container: state, address and the role services' systemd states."""
    require_root("status")
    settings = load_settings(inventory_path)
    if not INCUS.answers():
        raise LabError("the Incus daemon is not answering; run: inv lab.up")
    instances = list_instances()
    rows = []
    for host in settings.hosts:
        name = instance_name(host)
        instance = instances.get(name)
        if instance is None:
            rows.append(ContainerStatus(name, "MISSING", "-", {service: "-" for service in ROLE_SERVICES}))
        elif instance["status"] != "Running":
            rows.append(ContainerStatus(name, instance["status"].upper(), "-", {service: "-" for service in ROLE_SERVICES}))
        else:
            rows.append(ContainerStatus(name, "RUNNING", running_address(instance), service_states(name)))
    for name, state, address in incus_host_rows(settings):
        running = state == "RUNNING" and ":" in name
        rows.append(ContainerStatus(name, state, address, service_states(name) if running
                                    else {service: "-" for service in ROLE_SERVICES}))
    print_status(rows)
    return rows


def print_status(rows: list) -> None:
    header = ["CONTAINER", "STATE", "ADDRESS", *ROLE_SERVICES]
    table = [header] + [[row.name, row.state, row.address, *(row.services[s] for s in ROLE_SERVICES)] for row in rows]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def lab_down(inventory_path: str = "hosts.yaml", purge: bool = False) -> list:
    """Delete the lab containers; with ``purge`` also the image, the bridge and the pool if nothing else uses them."""
    require_root("down")
    settings = load_settings(inventory_path)
    if not INCUS.answers():
        raise LabError("the Incus daemon is not answering; start it with inv lab.up, then run lab.down")
    removed = []
    for incus_host in settings.incus_hosts:
        removed += remove_incus_host(settings, incus_host)
    instances = list_instances()
    for host in settings.hosts:
        name = instance_name(host)
        if name in instances:
            INCUS.run("delete", "--force", "--", name, timeout=120)
            removed.append(f"container {name}")
    forget_known_hosts({host.address for host in settings.hosts}
                       | {machine.address for incus_host in settings.incus_hosts
                          for machine in (incus_host.machine, *incus_host.instances)})
    if purge:
        removed += purge_shared(settings)
    print("lab.down: removed " + (", ".join(removed) if removed else "nothing (already down)"))
    return removed


def purge_shared(settings: LabSettings) -> list:
    """Remove the image alias, then the bridge and the pool only when no other instance uses them."""
    removed = []
    if image_exists(settings.image):
        INCUS.run("image", "delete", settings.image)
        removed.append(f"image {settings.image}")
    profile_devices = INCUS.query("/1.0/profiles/default")["devices"]
    network = INCUS.query(f"/1.0/networks/{settings.network}")
    if network is not None and network.get("managed"):
        users = [user for user in network.get("used_by") or [] if not user.startswith("/1.0/profiles/default")]
        if users:
            print(f"  keeping network {settings.network}: still used by {', '.join(users)}")
        else:
            if profile_devices.get("eth0", {}).get("network") == settings.network:
                INCUS.run("profile", "device", "remove", "default", "eth0")
            INCUS.run("network", "delete", settings.network)
            removed.append(f"network {settings.network}")
    pool = INCUS.query(f"/1.0/storage-pools/{STORAGE_POOL}")
    if pool is not None:
        users = [user for user in pool.get("used_by") or [] if not user.startswith("/1.0/profiles/default")]
        if users:
            print(f"  keeping storage pool {STORAGE_POOL}: still used by {', '.join(users)}")
        else:
            if profile_devices.get("root", {}).get("pool") == STORAGE_POOL:
                INCUS.run("profile", "device", "remove", "default", "root")
            INCUS.run("storage", "delete", STORAGE_POOL)
            removed.append(f"storage pool {STORAGE_POOL}")
    return removed
