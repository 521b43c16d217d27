"""The Incus daemon (started by hand: no systemd on the host), storage pool, lab bridge, default profile."""

from __future__ import annotations

import ipaddress
import json

from ..process import start_argv
from .base import INCUS, INCUSD, INCUSD_CONSOLE, INCUSD_LOG, INCUSD_PID, LAB_DIR, STORAGE_POOL, LabError, run
from .image import last_lines
from .settings import LabSettings


def ensure_daemon():
    """Start incusd ourselves (no systemd on the host) unless one already answers."""
    if INCUS.answers():
        return False, "incusd answering"
    LAB_DIR.mkdir(exist_ok=True)
    with open(INCUSD_CONSOLE, "ab") as console:
        # Its own session, so it outlives this task and a Ctrl-C here does not reach it.
        daemon = start_argv([INCUSD, "--group", "root", "--logfile", str(INCUSD_LOG)],
                            stdout=console, stderr=console, new_session=True, cwd="/")
    INCUSD_PID.write_text(f"{daemon.pid}\n", encoding="utf-8")
    ready = INCUS.run("admin", "waitready", "--timeout", "30", check=False, timeout=40)
    if not ready.ok or daemon.poll() is not None:
        raise LabError(
            f"incusd (pid {daemon.pid}) did not become ready; last lines of its logs:\n"
            + "\n".join(last_lines(path, 10) for path in (INCUSD_LOG, INCUSD_CONSOLE))
        )
    return True, f"started incusd pid {daemon.pid} (log .lab/incusd.log)"


# Every container's systemd holds inotify instances; the kernel's default of 128 per user runs out
# with a few labs (network creation and container boots then fail with "too many open files").
INOTIFY_LIMITS = {"/proc/sys/fs/inotify/max_user_instances": 1024, "/proc/sys/fs/inotify/max_user_watches": 65536}


def ensure_inotify_limits():
    """Raise the host's inotify limits to what the lab needs (runtime only; never lowered)."""
    raised = []
    for path, wanted in INOTIFY_LIMITS.items():
        with open(path, encoding="utf-8") as handle:
            current = int(handle.read().strip() or 0)
        if current < wanted:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(f"{wanted}\n")
            raised.append(f"{path.rsplit('/', 1)[1]} {current} -> {wanted}")
    return bool(raised), ", ".join(raised) or "inotify limits enough"


def ensure_storage_pool():
    pools = {pool["name"]: pool for pool in INCUS.json("storage", "list")}
    if STORAGE_POOL in pools:
        return False, f"pool {STORAGE_POOL} ({pools[STORAGE_POOL]['driver']})"
    INCUS.run("storage", "create", STORAGE_POOL, "dir")
    return True, f"created pool {STORAGE_POOL} (dir)"


def subnet_user(subnet, networks: list, own_network: str) -> str | None:
    """Who else already uses ``subnet``: another Incus network or a route on the host."""
    for network in networks:
        address = (network.get("config") or {}).get("ipv4.address", "")
        if network["name"] == own_network or not network.get("managed") or "/" not in address:
            continue
        if ipaddress.ip_interface(address).network.overlaps(subnet):
            return f"Incus network '{network['name']}' ({address})"
    for route in json.loads(run(["ip", "-j", "-4", "route", "show"]).stdout or "[]"):
        destination = route.get("dst", "default")
        if destination == "default" or route.get("dev") == own_network:
            continue
        if ipaddress.ip_network(destination, strict=False).overlaps(subnet):
            return f"host interface '{route.get('dev')}' (route {destination})"
    return None


def ensure_network(settings: LabSettings):
    """The lab bridge with its gateway at .1 of lab_subnet, NAT out, no IPv6."""
    wanted = f"{settings.gateway}/{settings.subnet.prefixlen}"
    networks = INCUS.json("network", "list")
    ours = next((network for network in networks if network["name"] == settings.network), None)
    if ours is not None:
        current = (ours.get("config") or {}).get("ipv4.address")
        if current != wanted:
            raise LabError(
                f"network {settings.network} exists with ipv4.address {current}, the inventory wants {wanted}; "
                "fix lab_subnet or remove it (inv lab.down --purge)"
            )
        return False, f"{settings.network} {wanted}"
    other = subnet_user(settings.subnet, networks, settings.network)
    if other:
        raise LabError(f"lab_subnet {settings.subnet} is already used by {other}; choose another lab_subnet in the inventory")
    INCUS.run("network", "create", settings.network, f"ipv4.address={wanted}", "ipv4.nat=true", "ipv6.address=none")
    return True, f"created {settings.network} {wanted}"


def ensure_default_profile(settings: LabSettings):
    """The default profile gives every container its root disk; each container's nic names its own
    lab bridge (``incus init --network``), so several labs (inventories) can live side by side."""
    devices = INCUS.query("/1.0/profiles/default")["devices"]
    if "root" in devices:
        return False, "root disk"
    INCUS.run("profile", "device", "add", "default", "root", "disk", "path=/", f"pool={STORAGE_POOL}")
    return True, "added root disk"
