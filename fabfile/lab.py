"""inv lab.up | lab.status | lab.down: the local Incus lab the roles run against.

``lab.up`` takes a bare Debian 12/13 machine (as root) to one running container
per inventory host that uses the incus connection: Incus installed from the apt
mirror already configured on the machine, its daemon started without systemd,
a ``dir`` storage pool, the lab bridge, a Debian base image built once with
debootstrap and cached under ``.lab/``, each container with its inventory
address, systemd running, and root ssh with a lab key and a strict
``known_hosts`` file. Every step checks before it acts, so a second run changes
nothing, and a run after any failure repairs what the last one left behind.

The containers come up bare: the roles install everything else.
"""

from __future__ import annotations

import concurrent.futures
import glob
import ipaddress
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from invoke import Collection, task
from invoke.exceptions import Exit

from .inventory import InventoryError, load_inventory
from .polling import WaitTimeout, wait_until
from .transports import q

REPO_ROOT = Path(__file__).resolve().parent.parent
LAB_DIR = REPO_ROOT / ".lab"
SSH_KEY = LAB_DIR / "ssh" / "id_ed25519"
KNOWN_HOSTS = LAB_DIR / "ssh" / "known_hosts"
IMAGE_CACHE = LAB_DIR / "image"
INCUSD = "/usr/libexec/incus/incusd"
INCUSD_LOG = LAB_DIR / "incusd.log"
# incusd repeats its log on stderr; kept apart so incusd.log has each line once, yet panics are not lost.
INCUSD_CONSOLE = LAB_DIR / "incusd.console.log"
INCUSD_PID = LAB_DIR / "incusd.pid"

STORAGE_POOL = "default"
SUPPORTED_CODENAMES = ("bookworm", "trixie")
# Codenames whose main suite lacks Incus: it comes from <codename>-backports.
INCUS_FROM_BACKPORTS = ("bookworm",)
BASE_PACKAGES = "systemd,systemd-sysv,dbus,iproute2,openssh-server,ca-certificates,curl,python3"
BUILD_TIMEOUT = 1200  # seconds for debootstrap; a slow mirror is fine, a hung one is not
APT_TIMEOUT = 900
BOOT_TIMEOUT = 60  # seconds for a container's systemd and sshd to come up
HEARTBEAT = 10  # seconds between progress lines of a long step
# Set last when a container is fully prepared: one without it was half-made and is recreated.
READY_KEY = "user.veza-lab.ready"
ROLE_SERVICES = ("haproxy", "veza-backend-api", "veza-stream-server")
SECRET_NAMES = ("database_password", "jwt_secret", "stream_signing_key")


class LabError(Exception):
    """A lab step failed; the message is what the user sees."""


# ---------------------------------------------------------------- output


@dataclass
class Step:
    name: str
    changed: bool
    seconds: float
    detail: str = ""


@dataclass
class LabReport:
    """What one ``lab.up`` did, phase by phase."""

    steps: list = field(default_factory=list)

    @property
    def changed(self) -> list:
        return [step for step in self.steps if step.changed]


class Progress:
    """Prints one line per phase (ok/changed + seconds) and keeps them for the summary."""

    def __init__(self):
        self.report = LabReport()
        self.started = time.monotonic()
        self._lock = threading.Lock()  # container phases finish on worker threads

    def record(self, name: str, changed: bool, seconds: float, detail: str = "") -> None:
        with self._lock:
            self.report.steps.append(Step(name, changed, seconds, detail))
            status = "changed" if changed else "ok"
            print(f"  {name:<26} {status:<8} {seconds:6.1f}s  {detail}", flush=True)

    def phase(self, name: str, action, *args):
        """Run ``action(*args) -> (changed, detail)`` as one reported phase."""
        started = time.monotonic()
        changed, detail = action(*args)
        self.record(name, changed, time.monotonic() - started, detail)

    @staticmethod
    def note(text: str) -> None:
        """A progress line inside a long phase."""
        print(f"      {text}", flush=True)


# ---------------------------------------------------------------- commands


def run(argv: list, *, timeout: float = 120, check: bool = True, input: str | None = None, env: dict | None = None):
    """Run a command without a shell; raise LabError naming it when it fails."""
    shown = " ".join(q(part) for part in argv)
    try:
        done = subprocess.run(
            argv, input=input, stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True, text=True, timeout=timeout, env=env,
        )
    except subprocess.TimeoutExpired:
        raise LabError(f"`{shown}` timed out after {timeout:.0f}s") from None
    except FileNotFoundError:
        raise LabError(f"`{argv[0]}` not found; is it installed?") from None
    if check and done.returncode != 0:
        raise LabError(f"`{shown}` failed (exit {done.returncode}): {tail(done.stderr or done.stdout, 5)}")
    return done


def tail(text: str, lines: int) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def incus(*args, timeout: float = 120, check: bool = True):
    return run(["incus", *args], timeout=timeout, check=check)


def incus_json(*args):
    """``incus ARGS --format json`` parsed."""
    return json.loads(incus(*args, "--format", "json").stdout or "null")


def incus_query(path: str):
    """GET one API object; None when it does not exist."""
    done = incus("query", path, check=False, timeout=30)
    return json.loads(done.stdout) if done.returncode == 0 else None


def daemon_answers() -> bool:
    return shutil.which("incus") is not None and incus("info", check=False, timeout=15).returncode == 0


def require_root(verb: str) -> None:
    if os.geteuid() != 0:
        raise LabError(f"lab.{verb} must run as root: it installs packages and drives the Incus daemon")


# ---------------------------------------------------------------- settings


@dataclass
class LabSettings:
    network: str
    subnet: ipaddress.IPv4Network
    image: str
    secrets_file: Path
    hosts: list  # inventory hosts that live in the lab

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)


def resolve_path(path: str) -> Path:
    """Paths given to lab tasks are relative to the repo root, not the shell's directory."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


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
    for host in hosts:
        check_host_address(inventory.path, host, subnet)
    return LabSettings(shared["lab_network"], subnet, shared["lab_image"], resolve_path(shared["secrets_file"]), hosts)


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


# ---------------------------------------------------------------- packages


def host_codename() -> str:
    values = {}
    with open("/etc/os-release", encoding="utf-8") as handle:
        for line in handle:
            key, sep, value = line.strip().partition("=")
            if sep:
                values[key] = value.strip('"')
    codename = values.get("VERSION_CODENAME", "")
    if values.get("ID") != "debian" or codename not in SUPPORTED_CODENAMES:
        raise LabError(f"the lab needs Debian {' or '.join(SUPPORTED_CODENAMES)}; this is {values.get('PRETTY_NAME', 'unknown')}")
    return codename


@dataclass
class AptSource:
    types: list
    uris: list
    suites: list
    components: list
    signed_by: str = ""


def parse_deb822(text: str) -> list:
    """Stanzas of a deb822 ``.sources`` file as dicts (comments and disabled stanzas dropped)."""
    stanzas, current, key = [], {}, None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current and current.get("enabled", "yes").lower() != "no":
                stanzas.append(current)
            current, key = {}, None
        elif line[0].isspace() and key:
            current[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    return stanzas


def parse_one_line_sources(text: str) -> list:
    """``deb [options] URI SUITE COMPONENT...`` lines as AptSource."""
    sources = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        options = ""
        rest = line[4:].strip()
        if rest.startswith("["):
            options, _, rest = rest[1:].partition("]")
        words = rest.split()
        if len(words) < 2:
            continue
        signed_by = next((opt.split("=", 1)[1] for opt in options.split() if opt.startswith("signed-by=")), "")
        sources.append(AptSource(["deb"], [words[0]], [words[1]], words[2:], signed_by))
    return sources


def read_apt_sources() -> list:
    sources = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in parse_deb822(Path(path).read_text(encoding="utf-8")):
            sources.append(AptSource(
                stanza.get("types", "").split(), stanza.get("uris", "").split(), stanza.get("suites", "").split(),
                stanza.get("components", "").split(), stanza.get("signed-by", ""),
            ))
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if os.path.exists(path):
            sources.extend(parse_one_line_sources(Path(path).read_text(encoding="utf-8")))
    return sources


def debian_mirror(codename: str) -> AptSource:
    """The configured source carrying ``<codename> main``: the mirror this machine already trusts."""
    for source in read_apt_sources():
        if "deb" in source.types and codename in source.suites and "main" in source.components and source.uris:
            return source
    raise LabError(f"no apt source for '{codename} main' in /etc/apt/sources.list(.d); configure the Debian mirror first")


def has_suite(suite: str) -> bool:
    return any(suite in source.suites and "deb" in source.types for source in read_apt_sources())


def ensure_backports_source(codename: str, mirror: AptSource) -> bool:
    """Add ``<codename>-backports`` on the mirror already configured; True if it was missing."""
    suite = f"{codename}-backports"
    if has_suite(suite):
        return False
    lines = [
        f"# Added by veza ops `inv lab.up`: Incus comes from {suite} on this Debian release.",
        "Types: deb", f"URIs: {mirror.uris[0]}", f"Suites: {suite}", "Components: main",
    ]
    if mirror.signed_by and "\n" not in mirror.signed_by:
        lines.append(f"Signed-By: {mirror.signed_by}")
    write_atomically(Path(f"/etc/apt/sources.list.d/veza-lab-{suite}.sources"), "\n".join(lines) + "\n", 0o644)
    return True


def package_installed(name: str) -> bool:
    done = run(["dpkg-query", "-W", "-f", "${Status}", name], check=False, timeout=30)
    return done.returncode == 0 and done.stdout.strip() == "install ok installed"


def apt_get(*args) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "-q", *args], timeout=APT_TIMEOUT, env=env)


def required_packages(codename: str) -> list:
    """(package, apt target-release args) for what the lab needs on the host, in install order."""
    incus_target = ["-t", f"{codename}-backports"] if codename in INCUS_FROM_BACKPORTS else []
    return [
        ("incus", incus_target),
        # Only recommended by incus, but Incus refuses to create a managed bridge without it.
        ("dnsmasq-base", []),
        ("debootstrap", []),
    ]


def ensure_packages(codename: str):
    """Incus (from backports on Debian 12), dnsmasq and debootstrap, each only if missing."""
    missing = [(name, target) for name, target in required_packages(codename) if not package_installed(name)]
    if not missing:
        return False, "incus, dnsmasq-base, debootstrap installed"
    done = []
    if any(name == "incus" for name, _ in missing) and codename in INCUS_FROM_BACKPORTS:
        if ensure_backports_source(codename, debian_mirror(codename)):
            done.append(f"added {codename}-backports")
    apt_get("update")
    for name, target in missing:
        if package_installed(name):
            continue  # came in with an earlier package
        apt_get("install", "-y", *target, name)
        done.append(f"installed {name}")
    return True, ", ".join(done)


# ---------------------------------------------------------------- daemon, pool, network, profile


def ensure_daemon():
    """Start incusd ourselves (no systemd on the host) unless one already answers."""
    if daemon_answers():
        return False, "incusd answering"
    LAB_DIR.mkdir(exist_ok=True)
    with open(INCUSD_CONSOLE, "ab") as console:
        # Its own session, so it outlives this task and a Ctrl-C here does not reach it.
        daemon = subprocess.Popen(
            [INCUSD, "--group", "root", "--logfile", str(INCUSD_LOG)],
            stdin=subprocess.DEVNULL, stdout=console, stderr=console, start_new_session=True, close_fds=True, cwd="/",
        )
    INCUSD_PID.write_text(f"{daemon.pid}\n", encoding="utf-8")
    ready = incus("admin", "waitready", "--timeout", "30", check=False, timeout=40)
    if ready.returncode != 0 or daemon.poll() is not None:
        raise LabError(
            f"incusd (pid {daemon.pid}) did not become ready; last lines of its logs:\n"
            + "\n".join(last_lines(path, 10) for path in (INCUSD_LOG, INCUSD_CONSOLE))
        )
    return True, f"started incusd pid {daemon.pid} (log .lab/incusd.log)"


def ensure_storage_pool():
    pools = {pool["name"]: pool for pool in incus_json("storage", "list")}
    if STORAGE_POOL in pools:
        return False, f"pool {STORAGE_POOL} ({pools[STORAGE_POOL]['driver']})"
    incus("storage", "create", STORAGE_POOL, "dir")
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
    networks = incus_json("network", "list")
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
    incus("network", "create", settings.network, f"ipv4.address={wanted}", "ipv4.nat=true", "ipv6.address=none")
    return True, f"created {settings.network} {wanted}"


def ensure_default_profile(settings: LabSettings):
    """The default profile gives every container its root disk and a nic on the lab bridge."""
    devices = incus_query("/1.0/profiles/default")["devices"]
    added = []
    if "root" not in devices:
        incus("profile", "device", "add", "default", "root", "disk", "path=/", f"pool={STORAGE_POOL}")
        added.append("root")
    if "eth0" not in devices:
        incus("profile", "device", "add", "default", "eth0", "nic", f"network={settings.network}", "name=eth0")
        added.append("eth0")
    elif devices["eth0"].get("network") != settings.network:
        raise LabError(
            f"the default profile's eth0 is on '{devices['eth0'].get('network')}', not the lab bridge "
            f"{settings.network}; remove it: incus profile device remove default eth0"
        )
    return bool(added), f"added {', '.join(added)}" if added else "root + eth0"


# ---------------------------------------------------------------- local files


def write_atomically(path: Path, text: str, mode: int) -> None:
    """Write via a temporary file and rename, so an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(staging, mode)
        os.replace(staging, path)
    except BaseException:
        os.unlink(staging)
        raise


def ensure_ssh_key():
    """One ed25519 key pair for the lab, made once."""
    public = SSH_KEY.with_suffix(".pub")
    if SSH_KEY.exists() and public.exists():
        return False, str(SSH_KEY.relative_to(REPO_ROOT))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_text = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public_text = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    SSH_KEY.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(SSH_KEY.parent, 0o700)
    write_atomically(SSH_KEY, private_text, 0o600)
    write_atomically(public, f"{public_text} veza-lab\n", 0o644)
    return True, f"created {SSH_KEY.relative_to(REPO_ROOT)}"


def lab_public_key() -> str:
    return SSH_KEY.with_suffix(".pub").read_text(encoding="utf-8").strip()


def ensure_secrets(path: Path):
    """Random values for the secrets the roles template, written once with mode 0600."""
    if path.exists():
        return False, f"{display_path(path)} exists"
    values = {name: secrets.token_urlsafe(32) for name in SECRET_NAMES}
    text = "# Generated by `inv lab.up` for the local lab only.\n" + yaml.safe_dump(values, default_flow_style=False)
    write_atomically(path, text, 0o600)
    return True, f"wrote {display_path(path)} (0600)"


def display_path(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


# ---------------------------------------------------------------- base image

SSH_HOST_KEYS_UNIT = """\
[Unit]
Description=Generate this container's own SSH host keys (the image ships none)
Before=ssh.service

[Service]
Type=oneshot
# Only creates the key types that are missing, so later boots do nothing.
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
"""

HOSTS_TEMPLATE = """\
127.0.0.1 localhost
127.0.1.1 {{ instance.name }}
::1 localhost ip6-localhost ip6-loopback
"""


def image_exists(alias: str) -> bool:
    return incus_query(f"/1.0/images/aliases/{alias}") is not None


def ensure_image(settings: LabSettings, codename: str):
    """Import the base image under its alias, building it first unless a cached build exists."""
    if image_exists(settings.image):
        return False, f"image {settings.image}"
    cache = IMAGE_CACHE / settings.image
    built = ""
    if not (cache / "meta.tar").exists() or not (cache / "rootfs.tar").exists():
        build_image(cache, codename, debian_mirror(codename).uris[0])
        built = "built and "
    started = time.monotonic()
    incus("image", "import", str(cache / "meta.tar"), str(cache / "rootfs.tar"), "--alias", settings.image, timeout=600)
    Progress.note(f"imported in {time.monotonic() - started:.1f}s")
    return True, f"{built}imported {settings.image}"


def build_image(cache: Path, codename: str, mirror: str) -> None:
    """debootstrap into a scratch directory, pack it, then move the result into the cache in one rename."""
    LAB_DIR.mkdir(exist_ok=True)
    for leftover in LAB_DIR.glob("image-build-*"):
        remove_tree(leftover)
    work = Path(tempfile.mkdtemp(prefix="image-build-", dir=LAB_DIR))
    try:
        rootfs = work / "rootfs"
        log = LAB_DIR / "debootstrap.log"
        timed_note("debootstrap", lambda: run_with_heartbeat(
            ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", codename, str(rootfs), mirror],
            log, "debootstrap", BUILD_TIMEOUT,
        ), f"log {display_path(log)}")
        prepare_rootfs(rootfs)
        timed_note("pack rootfs", lambda: run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(work / "rootfs.tar"), "."], timeout=600,
        ))
        write_metadata(work, codename)
        remove_tree(rootfs)
        staging = work / "out"
        staging.mkdir()
        for name in ("meta.tar", "rootfs.tar"):
            os.replace(work / name, staging / name)
        cache.parent.mkdir(parents=True, exist_ok=True)
        remove_tree(cache)
        os.replace(staging, cache)
    finally:
        remove_tree(work)


def timed_note(label: str, action, detail: str = "") -> None:
    started = time.monotonic()
    Progress.note(f"{label}: started {detail}".rstrip())
    action()
    Progress.note(f"{label}: done in {time.monotonic() - started:.1f}s")


def run_with_heartbeat(argv: list, log_path: Path, label: str, timeout: float) -> None:
    """Run a long command into a log file, printing its latest log line every few seconds."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        while True:
            try:
                code = process.wait(timeout=HEARTBEAT)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                if elapsed > timeout:
                    raise LabError(f"{label} took over {timeout}s; see {display_path(log_path)}") from None
                Progress.note(f"{label}: {elapsed:4.0f}s  {last_line(log_path)}")
    except BaseException:
        # Timeout or Ctrl-C: stop it before the caller removes the directory it is writing into.
        process.kill()
        process.wait(timeout=30)
        raise
    if code != 0:
        raise LabError(f"{label} failed (exit {code}); last lines of {display_path(log_path)}: {tail(log_path.read_text(errors='replace'), 5)}")


def last_lines(path: Path, count: int) -> str:
    """The end of a log file, headed by its name, for an error message."""
    lines = path.read_text(errors="replace").splitlines()[-count:] if path.exists() else ["(missing)"]
    return "\n".join([f"--- {display_path(path)}", *lines])


def last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1][:100] if lines else ""


def prepare_rootfs(rootfs: Path) -> None:
    """Make the tree an image: no shared identity (host keys, machine-id), sshd able to start."""
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    units = rootfs / "etc" / "systemd" / "system"
    (units / "ssh-host-keys.service").write_text(SSH_HOST_KEYS_UNIT, encoding="utf-8")
    wants = units / "ssh.service.wants"
    wants.mkdir(exist_ok=True)
    link = wants / "ssh-host-keys.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/ssh-host-keys.service")
    # An empty machine-id makes systemd generate a fresh one at each container's first boot.
    (rootfs / "etc" / "machine-id").write_text("", encoding="utf-8")
    dbus_id = rootfs / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()
    for package in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        package.unlink()


def write_metadata(work: Path, codename: str) -> None:
    """metadata.yaml and the templates Incus renders at creation (hostname, hosts), packed as meta.tar."""
    meta = work / "meta"
    (meta / "templates").mkdir(parents=True)
    metadata = {
        "architecture": platform.machine(),
        "creation_date": int(time.time()),
        "properties": {
            "os": "debian", "release": codename, "variant": "minbase",
            "description": f"Debian {codename} minbase with systemd and openssh (veza lab)",
        },
        "templates": {
            "/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"},
            "/etc/hosts": {"when": ["create", "copy"], "template": "hosts.tpl"},
        },
    }
    (meta / "metadata.yaml").write_text(yaml.safe_dump(metadata), encoding="utf-8")
    (meta / "templates" / "hostname.tpl").write_text("{{ instance.name }}\n", encoding="utf-8")
    (meta / "templates" / "hosts.tpl").write_text(HOSTS_TEMPLATE, encoding="utf-8")
    run(["tar", "--numeric-owner", "-C", str(meta), "-cf", str(work / "meta.tar"), "metadata.yaml", "templates"])


def remove_tree(path: Path) -> None:
    """Delete a build directory, first unmounting what an interrupted debootstrap left mounted in it."""
    if not path.exists():
        return
    resolved = str(path.resolve())
    with open("/proc/mounts", encoding="utf-8") as handle:
        mounts = [line.split()[1] for line in handle]
    for mount in sorted((m for m in mounts if m == resolved or m.startswith(resolved + "/")), reverse=True):
        run(["umount", "-l", mount], check=False, timeout=30)
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- containers


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
    return {instance["name"]: instance for instance in incus_json("list")}


def ensure_container(settings: LabSettings, host, existing: dict | None) -> ContainerResult:
    """Create (or repair), start and prepare one container; changes nothing that is already right."""
    started = time.monotonic()
    name = instance_name(host)
    # No security.nesting: systemd sandboxing (ProtectSystem, PrivateDevices, PrivateUsers,
    # SystemCallFilter...) was measured working in these unprivileged containers without it.
    wanted_config = {"raw.lxc": raw_lxc(settings, host.address)}
    actions = []
    if existing is not None and existing["config"].get(READY_KEY) != "true":
        incus("delete", "--force", name, timeout=120)
        actions.append("removed a half-made container")
        existing = None
    if existing is None:
        config_args = [arg for key, value in wanted_config.items() for arg in ("--config", f"{key}={value}")]
        incus("init", settings.image, name, *config_args, timeout=300)
        actions.append("created")
        status = "Stopped"
    else:
        status = existing["status"]
        stale = {key: value for key, value in wanted_config.items() if existing["config"].get(key, "").strip() != value}
        if stale:
            incus("config", "set", name, *(f"{key}={value}" for key, value in stale.items()))
            actions.append(f"set {', '.join(stale)}")
            if status == "Running":
                incus("restart", "--force", name, timeout=120)
                actions.append("restarted")
    if status != "Running":
        incus("start", name, timeout=120)
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
        incus("config", "set", name, f"{READY_KEY}=true")
    detail = f"{host.address} systemd {systemd_state}" + (f"; {', '.join(actions)}" if actions else "")
    return ContainerResult(name, host.address, bool(actions), time.monotonic() - started, detail, host_keys)


def boot_state(name: str, address: str) -> tuple:
    """(systemd's state, whether the container counts as up: running or degraded, and sshd answering)."""
    done = incus("exec", name, "--", "systemctl", "is-system-running", check=False, timeout=15)
    state = done.stdout.strip() or tail(done.stderr, 1)
    return state, state in ("running", "degraded") and port_open(address, 22)


def wait_until_booted(name: str, address: str) -> str:
    """Bounded wait for systemd to finish booting and sshd to answer on the container's address."""
    try:
        state = wait_until(lambda: boot_state(name, address), timeout=BOOT_TIMEOUT, interval=0.5,
                           done=lambda seen: seen[1], what=f"{name} to boot").value[0]
    except WaitTimeout as exc:
        state = exc.last_value[0] if exc.last_value else "unknown"
        console = incus("console", "--show-log", name, check=False, timeout=30)
        raise LabError(
            f"{name} not up within {BOOT_TIMEOUT}s (systemd: {state}, ssh on {address}:22 "
            f"{'open' if port_open(address, 22) else 'closed'}); console log tail:\n"
            + "\n".join((console.stdout or console.stderr).splitlines()[-20:])
        ) from None
    if state == "degraded":
        failed = incus("exec", name, "--", "systemctl", "--failed", "--plain", "--no-legend", check=False)
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
        done = incus("exec", name, "--", "sh", "-c", script, timeout=30)
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


def ensure_known_hosts(results: list):
    """known_hosts for strict checking: each container's address with its own host keys."""
    text = "".join(f"{result.address} {key}\n" for result in results for key in result.host_keys)
    if KNOWN_HOSTS.exists() and KNOWN_HOSTS.read_text(encoding="utf-8") == text:
        return False, display_path(KNOWN_HOSTS)
    write_atomically(KNOWN_HOSTS, text, 0o644)
    return True, f"wrote {display_path(KNOWN_HOSTS)} ({len(results)} hosts)"


# ---------------------------------------------------------------- the three entry points


def lab_up(inventory_path: str = "hosts.yaml") -> LabReport:
    """Bring the lab up from whatever state the machine is in; idempotent."""
    require_root("up")
    settings = load_settings(inventory_path)
    codename = host_codename()
    progress = Progress()
    print(f"lab.up: {len(settings.hosts)} containers on {settings.network} {settings.subnet}", flush=True)
    progress.phase("packages", ensure_packages, codename)
    progress.phase("incus daemon", ensure_daemon)
    progress.phase("storage pool", ensure_storage_pool)
    progress.phase("network", ensure_network, settings)
    progress.phase("default profile", ensure_default_profile, settings)
    progress.phase("ssh key", ensure_ssh_key)
    progress.phase("secrets", ensure_secrets, settings.secrets_file)
    progress.phase("base image", ensure_image, settings, codename)
    results = ensure_containers(settings, progress)
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
    done = incus("exec", name, "--", "systemctl", "is-active", *ROLE_SERVICES, check=False, timeout=30)
    answers = done.stdout.split()
    if len(answers) != len(ROLE_SERVICES):
        return {service: "?" for service in ROLE_SERVICES}
    return dict(zip(ROLE_SERVICES, answers))


def lab_status(inventory_path: str = "hosts.yaml") -> list:
    """One row per lab container: state, address and the role services' systemd states."""
    require_root("status")
    settings = load_settings(inventory_path)
    if not daemon_answers():
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
    if not daemon_answers():
        raise LabError("the Incus daemon is not answering; start it with inv lab.up, then run lab.down")
    removed = []
    instances = list_instances()
    for host in settings.hosts:
        name = instance_name(host)
        if name in instances:
            incus("delete", "--force", name, timeout=120)
            removed.append(f"container {name}")
    if purge:
        removed += purge_shared(settings)
    print("lab.down: removed " + (", ".join(removed) if removed else "nothing (already down)"))
    return removed


def purge_shared(settings: LabSettings) -> list:
    """Remove the image alias, then the bridge and the pool only when no other instance uses them."""
    removed = []
    if image_exists(settings.image):
        incus("image", "delete", settings.image)
        removed.append(f"image {settings.image}")
    profile_devices = incus_query("/1.0/profiles/default")["devices"]
    network = incus_query(f"/1.0/networks/{settings.network}")
    if network is not None and network.get("managed"):
        users = [user for user in network.get("used_by") or [] if not user.startswith("/1.0/profiles/default")]
        if users:
            print(f"  keeping network {settings.network}: still used by {', '.join(users)}")
        else:
            if profile_devices.get("eth0", {}).get("network") == settings.network:
                incus("profile", "device", "remove", "default", "eth0")
            incus("network", "delete", settings.network)
            removed.append(f"network {settings.network}")
    pool = incus_query(f"/1.0/storage-pools/{STORAGE_POOL}")
    if pool is not None:
        users = [user for user in pool.get("used_by") or [] if not user.startswith("/1.0/profiles/default")]
        if users:
            print(f"  keeping storage pool {STORAGE_POOL}: still used by {', '.join(users)}")
        else:
            if profile_devices.get("root", {}).get("pool") == STORAGE_POOL:
                incus("profile", "device", "remove", "default", "root")
            incus("storage", "delete", STORAGE_POOL)
            removed.append(f"storage pool {STORAGE_POOL}")
    return removed


# ---------------------------------------------------------------- invoke tasks

INVENTORY_HELP = "inventory file, relative to the repo root (default: hosts.yaml)"


def report_errors(action, *args):
    """Run a lab entry point; a failure becomes an ``error:`` block and a non-zero exit, no traceback."""
    try:
        return action(*args)
    except (LabError, InventoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise Exit(code=1) from None


@task(help={"inventory": INVENTORY_HELP})
def up(c, inventory="hosts.yaml"):
    """Build or repair the local Incus lab: daemon, bridge, base image, bare containers, ssh access."""
    report_errors(lab_up, inventory)


@task(help={"inventory": INVENTORY_HELP})
def status(c, inventory="hosts.yaml"):
    """Show each lab container's state, address and role services."""
    report_errors(lab_status, inventory)


@task(help={"inventory": INVENTORY_HELP, "purge": "also remove the image alias, the lab bridge and the storage pool"})
def down(c, inventory="hosts.yaml", purge=False):
    """Delete the lab containers (the Incus daemon keeps running)."""
    report_errors(lab_down, inventory, purge)


lab_collection = Collection("lab", up, status, down)
