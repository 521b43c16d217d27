"""One container per lab host: created or repaired, static address, systemd booted, lab key, known_hosts."""

from __future__ import annotations

import concurrent.futures
import socket
import time
from dataclasses import dataclass

from ..polling import WaitTimeout, wait_until
from ..shell import q
from .base import BOOT_TIMEOUT, INCUS, KNOWN_HOSTS, READY_KEY, LabError, Progress, display_path, run, tail, write_atomically
from .local_files import lab_public_key
from .settings import LabSettings, instance_name


@dataclass
class ContainerResult:
    name: str
    address: str
    changed: bool
    seconds: float
    detail: str
    host_keys: list  # "type base64" lines from /etc/ssh/ssh_host_*_key.pub


def raw_lxc(settings: LabSettings, address: str) -> str:
    """Static address set by LXC before systemd starts: DHCP needs udev, which these containers lack."""
    return (
        f"lxc.net.0.ipv4.address = {address}/{settings.subnet.prefixlen}\n"
        f"lxc.net.0.ipv4.gateway = {settings.gateway}"
    )


def list_instances() -> dict:
    """name -> instance object (status, config) for every instance, in one call."""
    return {instance["name"]: instance for instance in INCUS.json("list")}


def ensure_container(settings: LabSettings, host, existing: dict | None, *, ref: str | None = None,
                     nic_args: list | None = None, extra_config: dict | None = None) -> ContainerResult:
    """Create (or repair), start and prepare one container; changes nothing that is already right.

    ``ref`` is the Incus reference (``REMOTE:NAME`` on another Incus host), ``nic_args`` how ``incus init``
    gives it its nic (default: the lab bridge), ``extra_config`` more instance keys (nesting)."""
    started = time.monotonic()
    name = ref or instance_name(host)
    nic_args = ["--network", settings.network] if nic_args is None else nic_args
    # No security.nesting: systemd sandboxing (ProtectSystem, PrivateDevices, PrivateUsers,
    # SystemCallFilter...) was measured working in these unprivileged containers without it.
    wanted_config = {"raw.lxc": raw_lxc(settings, host.address), **(extra_config or {})}
    actions = []
    if existing is not None and existing["config"].get(READY_KEY) != "true":
        INCUS.run("delete", "--force", "--", name, timeout=120)
        actions.append("removed a half-made container")
        existing = None
    if existing is None:
        config_args = [arg for key, value in wanted_config.items() for arg in ("--config", f"{key}={value}")]
        image = f"{name.partition(':')[0]}:{settings.image}" if ":" in name else settings.image
        INCUS.run("init", *nic_args, *config_args, "--", image, name, timeout=300)
        actions.append("created")
        status = "Stopped"
    else:
        status = existing["status"]
        stale = {key: value for key, value in wanted_config.items() if existing["config"].get(key, "").strip() != value}
        if stale:
            INCUS.run("config", "set", "--", name, *(f"{key}={value}" for key, value in stale.items()))
            actions.append(f"set {', '.join(stale)}")
            if status == "Running":
                INCUS.run("restart", "--force", "--", name, timeout=120)
                actions.append("restarted")
    if status != "Running":
        INCUS.run("start", "--", name, timeout=120)
        actions.append("started")
    if existing is None:
        # A recreated container has a new MAC on an old address; the host's neighbour entry
        # for the old one stays REACHABLE for about 30 s and blackholes ssh until it expires.
        run(["ip", "neigh", "flush", "to", host.address, "dev", settings.network], check=False, timeout=10)
    systemd_state = wait_until_booted(name, host.address)
    key_added, host_keys = authorize_lab_key(name)
    if key_added:
        actions.append("authorized lab key")
    if existing is None or existing["config"].get(READY_KEY) != "true":
        INCUS.run("config", "set", "--", name, f"{READY_KEY}=true")
    detail = f"{host.address} systemd {systemd_state}" + (f"; {', '.join(actions)}" if actions else "")
    return ContainerResult(name, host.address, bool(actions), time.monotonic() - started, detail, host_keys)


def boot_state(name: str, address: str) -> tuple:
    """(systemd's state, whether the container counts as up: running or degraded, and sshd answering)."""
    done = INCUS.run("exec", "--", name, "systemctl", "is-system-running", check=False, timeout=15)
    state = done.stdout.strip() or tail(done.stderr, 1)
    return state, state in ("running", "degraded") and port_open(address, 22)


def wait_until_booted(name: str, address: str) -> str:
    """Bounded wait for systemd to finish booting and sshd to answer on the container's address."""
    try:
        state = wait_until(lambda: boot_state(name, address), timeout=BOOT_TIMEOUT, interval=0.5,
                           done=lambda seen: seen[1], what=f"{name} to boot").value[0]
    except WaitTimeout as exc:
        state = exc.last_value[0] if exc.last_value else "unknown"
        console = INCUS.run("console", "--show-log", "--", name, check=False, timeout=30)
        raise LabError(
            f"{name} not up within {BOOT_TIMEOUT}s (systemd: {state}, ssh on {address}:22 "
            f"{'open' if port_open(address, 22) else 'closed'}); console log tail:\n"
            + "\n".join((console.stdout or console.stderr).splitlines()[-20:])
        ) from None
    if state == "degraded":
        failed = INCUS.run("exec", "--", name, "systemctl", "--failed", "--plain", "--no-legend", check=False)
        state += f" (failed: {' '.join(line.split()[0] for line in failed.stdout.splitlines() if line.strip())})"
    return state


def port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def authorize_lab_key(name: str):
    """Append the lab key to root's authorized_keys if absent; return (added, host key lines) in one exec."""
    key = lab_public_key()
    script = (
        "set -e; umask 077; mkdir -p /root/.ssh; touch /root/.ssh/authorized_keys; "
        f"if ! grep -qxF {q(key)} /root/.ssh/authorized_keys; then "
        f"echo {q(key)} >> /root/.ssh/authorized_keys; echo KEY-ADDED; fi; "
        "cat /etc/ssh/ssh_host_*_key.pub"
    )
    # Seen once under load: an exec that succeeded with empty output. Ask again (bounded) before failing.
    for _ in range(3):
        done = INCUS.run("exec", "--", name, "sh", "-c", script, timeout=30)
        lines = done.stdout.splitlines()
        host_keys = [" ".join(line.split()[:2]) for line in lines if line.startswith(("ssh-", "ecdsa-"))]
        if host_keys:
            break
        time.sleep(1)
    if not host_keys:
        raise LabError(f"{name}: no ssh host keys in /etc/ssh; did ssh-host-keys.service run? (journalctl -u ssh-host-keys)")
    return "KEY-ADDED" in lines, host_keys


def ensure_containers(settings: LabSettings, progress: Progress) -> list:
    """All lab containers at once (they mostly wait on disk and boot); one report line each."""
    instances = list_instances()
    results, errors = [], []
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(settings.hosts)) as pool:
        futures = {
            pool.submit(ensure_container, settings, host, instances.get(instance_name(host))): host
            for host in settings.hosts
        }
        for future in concurrent.futures.as_completed(futures):
            host = futures[future]
            try:
                result = future.result()
            except LabError as exc:
                errors.append(f"{host.name}: {exc}")
                continue
            results.append(result)
            progress.record(f"container {result.name}", result.changed, result.seconds, result.detail)
    if errors:
        raise LabError("\n".join(errors))
    order = [instance_name(host) for host in settings.hosts]
    return sorted(results, key=lambda result: order.index(result.name))


def forget_known_hosts(addresses) -> None:
    """Drop the known_hosts lines of removed containers (their address may get a new key later)."""
    if not KNOWN_HOSTS.exists():
        return
    current = KNOWN_HOSTS.read_text(encoding="utf-8")
    kept = "".join(line + "\n" for line in current.splitlines() if line.strip() and line.split(" ", 1)[0] not in addresses)
    if kept != current:
        write_atomically(KNOWN_HOSTS, kept, 0o600)


def ensure_known_hosts(results: list):
    """known_hosts for strict checking: each container's address with its own host keys.

    Lines of other addresses (another lab inventory on the same machine) are kept.
    """
    ours = {result.address for result in results}
    current = KNOWN_HOSTS.read_text(encoding="utf-8") if KNOWN_HOSTS.exists() else ""
    kept = [line + "\n" for line in current.splitlines() if line.split(" ", 1)[0] not in ours and line.strip()]
    text = "".join(kept) + "".join(f"{result.address} {key}\n" for result in results for key in result.host_keys)
    if current == text:
        return False, display_path(KNOWN_HOSTS)
    write_atomically(KNOWN_HOSTS, text, 0o600)
    return True, f"wrote {display_path(KNOWN_HOSTS)} ({len(results)} hosts)"
